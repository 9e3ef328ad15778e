"""The Open Inference Protocol (KServe v2) wire format of one FP32 image batch: JSON or binary.

JSON request: ``{"inputs": [{"name": "input", "shape": [N, C, H, W], "datatype": "FP32", "data":
[...]}]}``, the data flattened in row-major order. Binary tensor data extension: the header
``Inference-Header-Content-Length: L``; the body is an ``L``-byte JSON header followed by the
raw little-endian tensor bytes, and the input carries ``"parameters": {"binary_data_size": B}``
instead of ``data`` (``B = N*C*H*W*4``). An output asked for with ``"parameters": {"binary_data":
true}`` (or the request parameter ``binary_data_output: true``) is answered the same way.

Server side: :func:`parse_infer_request` (strict and pure: bytes in, an :class:`InferRequest` or
a :class:`RequestError` with the HTTP status out) and :func:`encode_response`. Client side:
:func:`encode_request` and :func:`decode_response`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: The header giving the JSON part's length in a binary body (HTTP headers are case-insensitive).
HEADER_LENGTH = "Inference-Header-Content-Length"
#: The name of the binary extension in the server metadata.
BINARY_EXTENSION = "binary_tensor_data"
OUTPUT = "probabilities"
DTYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT8": "i1", "INT16": "<i2", "INT32": "<i4",
          "INT64": "<i8", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
          "BOOL": "?"}


class RequestError(Exception):
    """A request the server does not answer: the HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class InferRequest:
    """A checked inference request: the batch ``x`` and how the answer is wanted."""

    x: torch.Tensor
    binary_output: bool = False
    id: str | None = None


def _bad(msg: str) -> RequestError:
    return RequestError(400, f"malformed inference request: {msg}")


def _short(v: Any, n: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= n else text[:n] + "..."


def _get(headers: Mapping[str, str], name: str) -> str | None:
    want = name.lower()
    for k, v in headers.items():
        if k.lower() == want:
            return v
    return None


def header_length(headers: Mapping[str, str], body_size: int) -> int | None:
    """The JSON part's length of a binary body (``None``: a JSON body); checked against the body."""
    value = _get(headers, HEADER_LENGTH)
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,19}", value.strip()):
        raise _bad(f"{HEADER_LENGTH} must be a byte count, got {_short(value)}")
    n = int(value)
    if not 1 <= n <= body_size:
        raise _bad(f"{HEADER_LENGTH} of {n} bytes, but the body has {body_size}")
    return n


def _reject_constant(name: str) -> Any:
    raise _bad(f"{name} is not a number: send finite values")


def _load_json(raw: bytes | bytearray) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise _bad("the JSON is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, int digit limits
        raise _bad(f"not JSON ({_short(str(e), 120)})") from None


def _params(d: dict[str, Any], where: str) -> dict[str, Any]:
    p = d.get("parameters", {})
    if not isinstance(p, dict):
        raise _bad(f"{where} parameters must be an object")
    return p


def _flag(p: dict[str, Any], key: str, where: str) -> bool:
    v = p.get(key, False)
    if not isinstance(v, bool):
        raise _bad(f"{where} parameter {key} must be true or false, got {_short(v)}")
    return v


def _wants_binary(doc: dict[str, Any]) -> bool:
    binary = _flag(_params(doc, "request"), "binary_data_output", "request")
    outputs = doc.get("outputs")
    if outputs is None:
        return binary
    if not isinstance(outputs, list) or len(outputs) > 1:
        raise _bad(f"outputs must be a list naming at most the one output {OUTPUT!r}")
    for out in outputs:
        if not isinstance(out, dict) or out.get("name") != OUTPUT:
            raise _bad(f"unknown output {_short(out)}; the model has one output {OUTPUT!r}")
        binary = _flag(_params(out, "output"), "binary_data", "output") or binary
    return binary


def _shape(inp: dict[str, Any], image_shape: Sequence[int]) -> list[int]:
    shape = inp.get("shape")
    want = f"[N, {', '.join(map(str, image_shape))}]"
    if (not isinstance(shape, list) or len(shape) != 1 + len(image_shape)
            or any(type(s) is not int for s in shape)):
        raise _bad(f"shape must be {want} integers, got {_short(shape)}")
    if shape[1:] != list(image_shape) or shape[0] < 1:
        raise _bad(f"input shape {_short(shape)}; expected {want} with N >= 1")
    return shape


def _json_data(data: Any, count: int) -> np.ndarray:
    if not isinstance(data, list):
        raise _bad("data must be a flat list of numbers (or binary_data_size with binary data)")
    if len(data) != count:
        raise _bad(f"data holds {len(data)} values but the shape needs {count}")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise _bad("data must be a flat list of numbers") from None
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        raise _bad("data must be a flat list of numbers")
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(np.float32)


def parse_infer_request(body: bytes | bytearray, headers: Mapping[str, str],
                        image_shape: Sequence[int]) -> InferRequest:
    """The batch ``[N, *image_shape]`` of a JSON or binary request; :class:`RequestError` (400) for
    anything else: not JSON, NaN/infinite values, a wrong shape, size or datatype."""
    split = header_length(headers, len(body))
    doc = _load_json(body if split is None else bytes(body[:split]))
    if not isinstance(doc, dict):
        raise _bad("the request must be a JSON object")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _bad("id must be a string")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise _bad("inputs must be a list of one input object")
    inp = inputs[0]
    datatype = inp.get("datatype", "FP32")
    if not isinstance(datatype, str) or datatype.upper() != "FP32":
        raise _bad(f"input datatype must be FP32, got {_short(datatype)}")
    shape = _shape(inp, image_shape)
    count = math.prod(shape)
    size = _params(inp, "input").get("binary_data_size")
    extra = 0 if split is None else len(body) - split
    if size is not None:
        if split is None:
            raise _bad(f"binary_data_size needs the {HEADER_LENGTH} header")
        if "data" in inp:
            raise _bad("an input has either data or binary_data_size, not both")
        if type(size) is not int or size != count * 4:
            raise _bad(f"binary_data_size {_short(size)} is not {count * 4} (the shape x 4 bytes)")
        if extra != size:
            raise _bad(f"{extra} bytes of binary data follow the header; binary_data_size is {size}")
        arr = np.frombuffer(body, dtype="<f4", count=count, offset=split).astype(np.float32)
    else:
        if extra:
            raise _bad(f"{extra} bytes after the JSON header but no input has binary_data_size")
        arr = _json_data(inp.get("data"), count)
    if not np.isfinite(arr).all():
        raise _bad("the input holds NaN or infinite values (or values beyond FP32's range)")
    return InferRequest(torch.from_numpy(arr.reshape(shape)), _wants_binary(doc), rid)


def encode_response(model: str, probs: torch.Tensor, binary: bool = False,
                    request_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """The answer ``probabilities`` ``[N, C]`` as a body and its headers (binary on request)."""
    arr = probs.detach().cpu().float().numpy()
    out: dict[str, Any] = {"name": OUTPUT, "datatype": "FP32", "shape": list(arr.shape)}
    doc: dict[str, Any] = {"model_name": model, "outputs": [out]}
    if request_id is not None:
        doc["id"] = request_id
    if binary:
        raw = arr.astype("<f4").tobytes()
        out["parameters"] = {"binary_data_size": len(raw)}
        head = json.dumps(doc, allow_nan=False).encode()
        return head + raw, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    out["data"] = arr.reshape(-1).tolist()
    return json.dumps(doc, allow_nan=False).encode(), {"content-type": "application/json"}


def encode_request(x: torch.Tensor | np.ndarray, *, binary: bool = True, binary_output: bool = True,
                   name: str = "input") -> tuple[bytes, dict[str, str]]:
    """A request for the batch ``x`` (any shape, sent as FP32): the body and the headers to send."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    inp: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": "FP32"}
    doc: dict[str, Any] = {"inputs": [inp]}
    if binary_output:
        doc["outputs"] = [{"name": OUTPUT, "parameters": {"binary_data": True}}]
    if not binary:
        inp["data"] = arr.reshape(-1).tolist()
        return json.dumps(doc, allow_nan=False).encode(), {"content-type": "application/json"}
    raw = arr.astype("<f4").tobytes()
    inp["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps(doc).encode()
    return head + raw, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def decode_response(body: bytes, headers: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Every output of an answer (JSON or binary), by name, as arrays of their shape.

    Raises ValueError for a malformed answer (sizes that do not match, unknown datatypes).
    """
    try:
        split = header_length(headers, len(body))
    except RequestError as e:
        raise ValueError(e.message) from None
    doc = json.loads(body if split is None else body[:split])
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list):
        raise ValueError("the answer has no list of outputs")
    offset = split or 0
    found: dict[str, np.ndarray] = {}
    for out in outputs:
        if not isinstance(out, dict):
            raise ValueError(f"an output is not an object: {_short(out)}")
        dtype = DTYPES.get(str(out.get("datatype", "FP32")).upper())
        if dtype is None:
            raise ValueError(f"output {out.get('name')!r}: unknown datatype {out.get('datatype')!r}")
        shape = [int(s) for s in out.get("shape", [])]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if split is None or offset + int(size) > len(body):
                raise ValueError(f"output {out.get('name')!r}: binary_data_size beyond the body")
            arr = np.frombuffer(body, dtype=dtype, count=int(size) // np.dtype(dtype).itemsize,
                                offset=offset).astype(np.dtype(dtype).newbyteorder("="))
            offset += int(size)
        else:
            arr = np.asarray(out.get("data"), dtype=np.dtype(dtype).newbyteorder("="))
        found[str(out.get("name"))] = arr.reshape(shape)
    return found
