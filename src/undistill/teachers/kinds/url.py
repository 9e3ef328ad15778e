"""A model behind an Open Inference Protocol URL (``http(s)://host:port/v2/models/NAME``).

The transport (:class:`~undistill.teachers.remote.RemoteTeacher`) speaks the protocol; the
client's ``cache`` and ``budget`` wrap it (:class:`~undistill.teachers.wrappers.Cached` around
:class:`~undistill.teachers.wrappers.Budgeted`), so cache hits are free and every attempt that
may reach the server is paid from the budget.
"""

from __future__ import annotations

from typing import Any

from undistill.teachers.base import Teacher
from undistill.teachers.kind import Kind, Source, register_kind
from undistill.teachers.spec import read_spec


def open_source(req: Source) -> Teacher:
    from undistill.teachers.remote import RemoteTeacher
    from undistill.teachers.wrappers import wrap

    client: dict[str, Any] = dict(req.client)
    cache, budget = client.pop("cache", None), client.pop("budget", None)
    return wrap(RemoteTeacher(req.source, read_spec(None, req.spec), **client), cache=cache,
                budget=budget)


KIND = register_kind(Kind(
    "url", lambda source, arch: source.startswith(("http://", "https://")), open_source,
    describe="an http(s) URL", identity="SHA-256 of the URL and of the answer to the fixed probe",
    remote=True, order=0))
