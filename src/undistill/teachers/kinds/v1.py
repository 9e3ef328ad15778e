"""A model behind the "V1" prediction protocol of TensorFlow Serving's REST API and KServe v1.

``http(s)://host:port/v1/models/NAME`` (optionally ``.../versions/N``): a batch is POSTed to
``{url}:predict`` as ``{"instances": [image, ...]}`` (each image a nested list in the model's own
layout, ``[C, H, W]``) and answered as ``{"predictions": [[p_1, ..., p_C], ...]}`` (probabilities
or logits, one row per image). Everything else -- retries, the total deadline, the answer size
cap, the budget that counts every attempt, the answer cache, credentials -- is the Open Inference
Protocol teacher's (:class:`~undistill.teachers.remote.RemoteTeacher`), which this one extends.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from undistill.teachers.answers import load_json
from undistill.teachers.base import Teacher, TeacherError
from undistill.teachers.kind import Kind, Source, register_kind
from undistill.teachers.remote import RemoteTeacher
from undistill.teachers.spec import read_spec

V1_URL = re.compile(r"^https?://[^/]+(/.*)?/v1/models/[^/:]+(/versions/\d+)?/?$")


class V1Teacher(RemoteTeacher):
    """The V1 protocol's request and answer; the transport is the Open Inference Protocol's."""

    kind = "v1"

    @property
    def endpoint(self) -> str:
        return f"{self.source}:predict"

    def encode(self, x: np.ndarray) -> bytes:
        return json.dumps({"instances": x.tolist()}).encode()

    def decode(self, body: bytes, n: int) -> np.ndarray:
        def fail(msg: str) -> TeacherError:
            return TeacherError(f"{self.source}: {msg}")

        doc = load_json(body, self.source)
        rows = doc.get("predictions") if isinstance(doc, dict) else None
        if not isinstance(rows, list) or len(rows) != n:
            raise fail(f"expected {{'predictions': [...]}} with {n} row(s)")
        width = len(rows[0]) if isinstance(rows[0], list) else -1
        if width < 2 or not all(isinstance(r, list) and len(r) == width and all(
                type(v) in (int, float) for v in r) for r in rows):
            raise fail("each prediction must be a list of numbers, one per class, all of one length")
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.asarray(rows, dtype=np.float64).astype(np.float32)
        if not np.isfinite(arr).all():
            raise fail("the answer holds NaN or infinite values")
        if self.spec.num_classes is not None and width != self.spec.num_classes:
            raise fail(f"answers {width} classes but {self.spec.num_classes} are expected")
        return arr


def open_source(req: Source) -> Teacher:
    from undistill.teachers.wrappers import wrap

    client: dict[str, Any] = dict(req.client)
    cache, budget = client.pop("cache", None), client.pop("budget", None)
    return wrap(V1Teacher(req.source, read_spec(None, req.spec), **client), cache=cache,
                budget=budget)


def is_v1(source: str, arch: str | None = None) -> bool:
    """A ``.../v1/models/NAME`` URL (credentials in it ignored)."""
    return bool(V1_URL.match(re.sub(r"//[^/@]*@", "//", source)))


KIND = register_kind(Kind(
    "v1", is_v1, open_source,
    describe="an http(s) URL of a V1 (TensorFlow Serving / KServe v1) model, .../v1/models/NAME",
    identity="SHA-256 of the URL and of the answer to the fixed probe", remote=True, order=-1))
