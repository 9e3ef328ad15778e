"""The request limits of ``undistill serve``: one body's size, the bytes of all bodies in flight,
the time a body may take to arrive, and the checks of these options (ValueError naming one)."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any


class BodyError(Exception):
    """A body the server stops reading: HTTP ``status``, a one-line ``message``, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``, else ValueError ``"<name>: ..."``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        span = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name}: must be {span}, got {value}")
    return value


def check_port(port: Any) -> int:
    return check_int("port", port, 0, 65535)


def check_options(api_key: str | None, max_request_bytes: Any, max_inflight_bytes: Any,
                  body_timeout: Any) -> tuple[int, int, float]:
    """The checked limits (``max_inflight_bytes`` ``None``: 4 x ``max_request_bytes``)."""
    if api_key is not None and (not isinstance(api_key, str) or not api_key):
        raise ValueError("api_key: must be a non-empty string (None serves without a key)")
    max_request = check_int("max_request_bytes", max_request_bytes, 1)
    inflight = 4 * max_request if max_inflight_bytes is None else max_inflight_bytes
    inflight = check_int("max_inflight_bytes", inflight, max_request)
    if (isinstance(body_timeout, bool) or not isinstance(body_timeout, int | float)
            or not math.isfinite(body_timeout) or body_timeout <= 0):
        raise ValueError(f"body_timeout: must be a positive number of seconds, got {body_timeout!r}")
    return max_request, inflight, float(body_timeout)


class InflightBytes:
    """Bytes of request bodies being read or answered, against ``limit`` (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def try_reserve(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._lock:
            self.used -= n


class Reservation:
    """One request's share of :class:`InflightBytes`; :meth:`release` gives it all back."""

    def __init__(self, pool: InflightBytes) -> None:
        self.pool, self.held = pool, 0

    def grow(self, n: int) -> None:
        if not self.pool.try_reserve(n):
            raise BodyError(503, f"busy: request bodies in flight would exceed {self.pool.limit} "
                                 f"bytes; retry later", {"Retry-After": "1"})
        self.held += n

    def release(self) -> None:
        self.pool.release(self.held)
        self.held = 0


async def _read(request: Any, max_bytes: int, held: Reservation) -> bytes | bytearray:
    declared = request.headers.get("content-length")
    if declared is not None:  # uvicorn has checked it is a number and sends exactly that many bytes
        size = int(declared)
        if size > max_bytes:
            raise BodyError(413, f"request of {size} bytes exceeds the limit of {max_bytes}")
        held.grow(size)
        buf, pos = bytearray(size), 0
        async for chunk in request.stream():
            if pos + len(chunk) > size:
                raise BodyError(400, "the body is longer than its Content-Length")
            buf[pos:pos + len(chunk)] = chunk
            pos += len(chunk)
        if pos != size:
            raise BodyError(400, f"the body has {pos} bytes but Content-Length says {size}")
        return buf
    chunks, total = [], 0
    async for chunk in request.stream():  # chunked: counted while it arrives
        total += len(chunk)
        if total > max_bytes:
            raise BodyError(413, f"request exceeds the limit of {max_bytes} bytes")
        held.grow(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(request: Any, max_bytes: int, held: Reservation,
                    timeout: float) -> bytes | bytearray:
    """The body of a Starlette ``request``, read while counting: BodyError 413 past ``max_bytes``
    (before reading when Content-Length says so), 503 past the in-flight limit, 408 when it takes
    longer than ``timeout`` seconds. ``held`` keeps what was reserved (the caller releases it)."""
    try:
        return await asyncio.wait_for(_read(request, max_bytes, held), timeout)
    except TimeoutError:
        raise BodyError(408, f"the body did not arrive within {timeout:g} s") from None
