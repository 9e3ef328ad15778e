"""The answer of an Open Inference Protocol server, checked before anything uses or caches it.

:func:`parse_answer` is pure (bytes in, a float32 ``[N, C]`` array or a one-line
:class:`TeacherError` out): valid JSON without NaN/Infinity literals and not nested past what
Python's parser takes, an ``outputs`` list, the output named ``probabilities``, ``probs``,
``logits``, ``labels`` or ``output`` (else the first), a valid ``shape`` of ``[N, C]`` (or INT labels
``[N]``, one-hot), as many values as the shape holds, all finite, the expected class count.
:func:`answer_limit` is the default cap on an answer's size.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from undistill.teachers.errors import TeacherError

OUTPUT_NAMES = ("probabilities", "probs", "logits", "labels", "output")


def answer_limit(n: int, num_classes: int | None) -> int:
    """The default cap on an answer's size (bytes): 64 KiB + 64 bytes per value answered."""
    return (64 << 10) + n * (num_classes or 1000) * 64


# ---------------------------------------------------------------- the answer, checked
class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(name)


def _snippet(body: bytes | str, size: int = 120) -> str:
    text = body[:size * 4].decode("utf-8", "replace") if isinstance(body, bytes) else body
    return repr(text[:size])


def _numbers(data: Any) -> list[int | float] | None:
    """The values of ``data``: a list of numbers, or of rows of numbers; None for anything else."""
    if not isinstance(data, list):
        return None
    if data and all(isinstance(row, list) for row in data):
        if len({len(row) for row in data}) != 1:
            return None  # ragged rows
        data = [v for row in data for v in row]
    if not all(type(v) is float or (type(v) is int and -(1 << 63) <= v < 1 << 64) for v in data):
        return None
    return data


def load_json(body: bytes, source: str) -> Any:
    """An answer's JSON document; NaN/Infinity literals, bad JSON and nesting too deep for the
    parser are one-line TeacherErrors naming ``source``."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except _NonFinite:
        raise TeacherError(f"{source}: the answer holds NaN or infinite values") from None
    except (ValueError, TypeError, RecursionError):  # bad JSON or encoding, too deeply nested
        raise TeacherError(f"{source}: the answer is not JSON: {_snippet(body)}") from None


def parse_answer(body: bytes, n: int, num_classes: int | None, source: str) -> np.ndarray:
    """An Open Inference Protocol answer to ``n`` images -> float32 ``[n, C]`` (labels one-hot),
    ``C == num_classes`` when given. Anything else is a one-line TeacherError naming ``source``."""
    def fail(msg: str) -> TeacherError:
        return TeacherError(f"{source}: {msg}")

    doc = load_json(body, source)
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        raise fail(f"the answer has no 'outputs' list (Open Inference Protocol): {_snippet(body)}")
    named = [o for o in outputs if isinstance(o.get("name"), str) and o["name"] in OUTPUT_NAMES]
    out = named[0] if named else outputs[0]
    what = f"output {_snippet(out['name'], 40)}" if isinstance(out.get("name"), str) else "the output"
    shape, values = out.get("shape"), _numbers(out.get("data"))
    if (not isinstance(shape, list) or len(shape) not in (1, 2) or values is None
            or not all(type(s) is int and 0 <= s < 1 << 31 for s in shape)):
        raise fail(f"{what} has no valid 'shape' and 'data' (a list of numbers)")
    if shape[0] != n or (len(shape) == 2 and shape[1] < 1):
        raise fail(f"answered shape {shape} to {n} image(s); expected [{n}, num_classes]")
    if len(values) != math.prod(shape):
        raise fail(f"{what} has {len(values)} values for shape {shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, refused below
        arr = np.asarray(values, dtype=np.float64).astype(np.float32)
    arr = arr.reshape(shape)
    if not np.isfinite(arr).all():
        raise fail("the answer holds NaN or infinite values")
    dtype = out.get("datatype", "FP32")
    if len(shape) == 1:
        if not (isinstance(dtype, str) and dtype.upper().startswith(("INT", "UINT"))):
            raise fail(f"answered shape {shape} to {n} image(s); expected [{n}, num_classes]")
        if num_classes is None:
            raise fail("answers labels only; give num_classes")
        if (arr != np.round(arr)).any() or arr.min(initial=0) < 0 or arr.max(initial=0) >= num_classes:
            raise fail(f"a label outside [0, {num_classes}) or not an integer")
        arr = np.eye(num_classes, dtype=np.float32)[arr.astype(np.int64)]
    if num_classes is not None and arr.shape[1] != num_classes:
        raise fail(f"answers {arr.shape[1]} classes but {num_classes} are expected")
    return arr
