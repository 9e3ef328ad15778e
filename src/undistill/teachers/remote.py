"""A black-box teacher behind an Open Inference Protocol (KServe v2 / Triton) URL.

``POST {url}/infer`` with ``{"inputs": [{"name": "input", "shape": [N, C, H, W], "datatype":
"FP32", "data": [...]}]}``; the answer's first output (or the one named ``probabilities``,
``probs``, ``logits`` or ``labels``) is read: an FP32 ``[N, C]`` tensor, or INT labels ``[N]``
(then one-hot probabilities). Queries go out in request batches of ``batch_size`` images, at most
``concurrency`` at once, at most ``rate`` requests per second, with up to ``retries`` retries with
exponential backoff (httpx + tenacity) on connection errors, timeouts, 429 and 5xx answers; other
4xx answers fail at once with the server's message.

Nothing the server sends is trusted:

* ``timeout`` is a total deadline per request (connecting, sending and the whole answer): a
  server that trickles its answer byte by byte times out like a silent one (a retryable failure).
* An answer is read as a stream and cut off past ``max_answer_bytes`` (default: 64 KiB plus 64
  bytes per answered value, ``64 KiB + N * num_classes * 64`` for N images; 1000 classes while the
  count is unknown); a larger answer is an error, not retried.
* An answer is checked (:func:`parse_answer`) before it is used or cached: valid JSON without
  NaN/Infinity literals, bounded nesting, ``[N, num_classes]`` finite values, or integer labels
  in ``[0, num_classes)``. Every failure is a one-line :class:`TeacherError`.

This transport only speaks the protocol; an answer cache and a query budget wrap it
(:class:`~undistill.teachers.wrappers.Cached`, :class:`~undistill.teachers.wrappers.Budgeted`:
``Teacher.from_url(url, cache=..., budget=...)``). The budget is the meter of each request
(:class:`~undistill.teachers.base.Ask`), and the transport pays every attempt that may have reached
the server from it, retries included (an HTTP error status, any timeout -- conservatively even one
that hit while connecting --, a connection broken mid-request, a bad or oversized answer); only
an attempt that never connected (connection refused, httpx's connect timeout) is given back.
A request or retry that would exceed the budget is never sent (:class:`BudgetExhausted`); a batch
is sent only if its first attempts all fit. Each checked chunk of answers is handed to the
request's sink as it arrives (the cache commits it), so a killed attack loses only the requests
in flight.

Credentials: an API key goes in an ``Authorization: Bearer`` header; ``user:password@`` in the URL
is taken out of it and sent as HTTP basic auth, so the teacher's ``source`` -- its identity, run
configs, ``describe()``, messages -- never holds them.

The identity of a URL teacher is the URL plus a hash of its answer to the fixed probe
(:meth:`Teacher.probe_input`): the probe is sent, uncached, each time the teacher is opened, so a
model retrained behind the same URL gets a new identity and is never answered from an old cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import numpy as np
import torch
from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt, wait_exponential

from undistill.config import InputSpec
from undistill.teachers.answer_cache import AnswerCache, QueryBudget, input_key
from undistill.teachers.answers import answer_limit, parse_answer
from undistill.teachers.base import Ask, Meter, Teacher, TeacherError

__all__ = ["AnswerCache", "QueryBudget", "RemoteTeacher", "answer_limit", "input_key", "parse_answer",
           "split_credentials"]

T = TypeVar("T")


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``http://user:pw@host/p`` -> (``http://host/p``, (user, pw)); other URLs are kept as they are."""
    try:
        parts = urlsplit(url)
    except ValueError as e:  # e.g. a bad IPv6 host; the message leaves any user:password@ out
        raise TeacherError(f"{re.sub(r'//[^/]*@', '//', url)}: not a valid URL ({e})") from None
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


# ---------------------------------------------------------------- requests, on an event loop
class _Retryable(Exception):
    pass


class DeadlineExceeded(_Retryable):
    """A request took longer than its total deadline (retryable, and counted in the budget)."""


_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def _retryable(e: BaseException) -> bool:
    return isinstance(e, _Retryable | httpx.TransportError)


class _Loop:
    """An asyncio event loop in a daemon thread, where a teacher's requests run (the deadline of
    a request then cancels it wherever it is stuck)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self.loop.run_forever, name="undistill-remote",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if os.getpid() != self.pid or self.loop.is_closed() or not self.thread.is_alive():
            coro.close()
            raise TeacherError("this URL teacher is closed (or was opened in another process)")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed() or os.getpid() != self.pid:
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=10)
            if not self.thread.is_alive():
                self.loop.close()


async def _read(r: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The body, at most ``limit`` bytes of it; True if there was more."""
    parts: list[bytes] = []
    size = 0
    async for chunk in r.aiter_bytes():
        if size + len(chunk) > limit:
            parts.append(chunk[:limit - size])
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False


class RemoteTeacher(Teacher):
    """A model behind an Open Inference Protocol URL (``http(s)://host:port/v2/models/NAME``)."""

    kind = "url"

    def __init__(self, url: str, spec: InputSpec | None = None, *, api_key: str | None = None,
                 auth: tuple[str, str] | None = None, batch_size: int = 64, concurrency: int = 4,
                 rate: float | None = None, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.5, max_answer_bytes: int | None = None) -> None:
        source, in_url = split_credentials(url)
        if not source.startswith(("http://", "https://")):
            raise TeacherError(f"{source}: not an http(s) URL")
        super().__init__(source.rstrip("/"), spec)
        if batch_size < 1 or concurrency < 1 or retries < 0 or timeout <= 0:
            raise TeacherError(f"{self.source}: batch_size, concurrency >= 1, retries >= 0, timeout > 0"
                               f" (got {batch_size}, {concurrency}, {retries}, {timeout})")
        if max_answer_bytes is not None and max_answer_bytes < 1:
            raise TeacherError(f"{self.source}: max_answer_bytes must be positive")
        if api_key is not None and not api_key.strip():
            raise TeacherError(f"{self.source}: empty API key (an empty environment variable?); it "
                               f"would turn authentication off: give the key, or none")
        if in_url and auth:
            raise TeacherError(f"{self.source}: credentials both in the URL and as auth; give one")
        auth = auth or in_url
        if auth and api_key:
            raise TeacherError(f"{self.source}: give an API key or basic-auth credentials, not both")
        self.batch_size, self.concurrency = batch_size, concurrency
        self.rate, self.retries, self.backoff = rate, retries, backoff
        self.timeout, self.max_answer_bytes = float(timeout), max_answer_bytes
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.__dict__["_http"] = httpx.AsyncClient(
            timeout=timeout, headers={**headers, "Accept-Encoding": "identity"},
            auth=httpx.BasicAuth(*auth) if auth else None,
            limits=httpx.Limits(max_connections=concurrency))
        loop = _Loop()
        self.__dict__["_loop"] = loop
        weakref.finalize(self, loop.stop)
        self._rate_lock = threading.Lock()
        self._next_slot = 0.0
        self.sent = 0  # images answered by the server to this client (probe included)

    # ---------------------------------------------------------------- the protocol
    @property
    def endpoint(self) -> str:
        """Where a batch is POSTed (the Open Inference Protocol's ``{url}/infer``)."""
        return f"{self.source}/infer"

    def encode(self, x: np.ndarray) -> bytes:
        """The request body for the images ``x`` ``[N, C, H, W]`` (float32)."""
        return json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.reshape(-1).tolist()}]}).encode()

    def decode(self, body: bytes, n: int) -> np.ndarray:
        """An answer's body -> checked float32 ``[n, C]`` (:func:`parse_answer`)."""
        return parse_answer(body, n, self.spec.num_classes, self.source)

    # ---------------------------------------------------------------- one request
    async def _wait_for_slot(self) -> None:
        if not self.rate:
            return
        with self._rate_lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _attempt(self, payload: bytes, n: int) -> bytes:
        """One request, all of it within ``timeout``: the body of a 2xx answer."""
        await self._wait_for_slot()
        limit = self.max_answer_bytes or answer_limit(n, self.spec.num_classes)
        try:
            async with asyncio.timeout(self.timeout), self._http.stream(
                    "POST", self.endpoint, content=payload,
                    headers={"Content-Type": "application/json"}) as r:
                if r.status_code >= 400:
                    text, _ = await _read(r, 2048)
                    msg = f"HTTP {r.status_code}: {' '.join(text.decode('utf-8', 'replace').split())}"
                    if r.status_code == 429 or r.status_code >= 500:
                        raise _Retryable(msg[:200])
                    raise TeacherError(f"{self.source}: {msg[:300]}")
                declared = r.headers.get("content-length", "")
                body, more = (b"", True) if declared.isdigit() and int(declared) > limit else (
                    await _read(r, limit))
                if more:
                    raise TeacherError(f"{self.source}: the answer is more than {limit} bytes "
                                       f"(max_answer_bytes); not read further")
                return body
        except TimeoutError:
            raise DeadlineExceeded(f"no complete answer within the {self.timeout:g} s timeout"
                                   ) from None

    async def _post(self, x: np.ndarray, meter: Meter, held: bool = False) -> np.ndarray:
        """Ask about ``x``, retrying; each attempt that may reach the server is paid on ``meter``
        (``held``: the first attempt's images are reserved already)."""
        n = int(x.shape[0])
        payload = self.encode(x)
        paid = held  # a reservation held for the next attempt
        try:
            async for attempt in AsyncRetrying(
                    retry=retry_if_exception(_retryable), stop=stop_after_attempt(self.retries + 1),
                    wait=wait_exponential(multiplier=self.backoff, min=self.backoff, max=30)):
                with attempt:
                    if not paid:
                        meter.reserve(n, retry=attempt.retry_state.attempt_number > 1)
                    paid = False
                    try:
                        body = await self._attempt(payload, n)
                    except _NOT_SENT:
                        meter.release(n)
                        raise
                    out = self.decode(body, n)
        except RetryError as e:
            last = e.last_attempt.exception()
            raise TeacherError(f"{self.source}: no answer after {self.retries + 1} attempts "
                               f"({type(last).__name__}: {last})") from None
        finally:
            if paid:
                meter.release(n)
        return out

    # ---------------------------------------------------------------- a batch
    @property
    def identity(self) -> str:
        if self._digest is None:
            raise TeacherError(f"{self.source}: identity unknown until the teacher is probed")
        return self._digest

    @property
    def needs_probe(self) -> bool:
        return self._digest is None

    def probe(self, meter: Meter | None = None) -> torch.Tensor:
        """Send the fixed probe (never from a cache); its answer fixes the identity."""
        x = self.probe_input().numpy()
        out = self._loop.run(self._post(x, meter or QueryBudget(None)))
        self.sent += 1
        t = torch.from_numpy(out)
        self.check_answer(t, 1)
        h = hashlib.sha256(self.source.encode())
        h.update(np.round(out.astype(np.float64), 4).astype(np.float32).tobytes())
        self._digest = f"{self.kind}:{h.hexdigest()[:24]}"
        return t

    async def _ask(self, arr: np.ndarray, chunks: list[list[int]], meter: Meter,
                   got: Callable[[list[int], np.ndarray], None]) -> None:
        """Ask about each chunk of rows (their first attempts already reserved), handing each
        checked answer on at once; then raise the first error."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(c: list[int]) -> None:
            entered = False
            try:
                async with gate:
                    entered = True
                    out = await self._post(arr[c], meter, held=True)
            finally:
                if not entered:
                    meter.release(len(c))
            got(c, out)
            self.sent += len(c)

        results = await asyncio.gather(*(one(c) for c in chunks), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise next((e for e in errors if not isinstance(e, TeacherError)), errors[0])

    def answer(self, x: torch.Tensor, ask: Ask | None = None) -> torch.Tensor:
        """Each distinct image asked once, in chunks of ``batch_size``, ``concurrency`` at once;
        every attempt paid on ``ask.meter``, every checked chunk handed to ``ask.on_rows``."""
        ask = ask or Ask()
        meter: Meter = ask.meter if ask.meter is not None else QueryBudget(None)
        if self._digest is None:
            self.probe(meter)
        arr = x.detach().cpu().float().numpy()
        keys = [input_key(row) for row in arr]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        rows = list(first.values())
        meter.reserve(len(rows))  # the first attempts: all of them fit, or none is sent
        chunks = [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        known: dict[str, np.ndarray] = {}

        def got(c: list[int], out: np.ndarray) -> None:
            if ask.on_rows is not None:
                ask.on_rows(c, torch.from_numpy(out))
            known.update({keys[i]: out[j] for j, i in enumerate(c)})

        self._loop.run(self._ask(arr, chunks, meter, got))
        return torch.from_numpy(np.stack([known[k] for k in keys]))

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        return self.answer(x)

    def close(self) -> None:
        with contextlib.suppress(TeacherError):  # closed already, or another process
            self._loop.run(self._http.aclose())
        self._loop.stop()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sent": self.sent}
