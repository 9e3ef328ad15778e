"""A black-box teacher behind an Open Inference Protocol (KServe v2 / Triton) URL.

``POST {url}/infer`` with ``{"inputs": [{"name": "input", "shape": [N, C, H, W], "datatype":
"FP32", "data": [...]}]}``; the answer's first output (or the one named ``probabilities``,
``probs``, ``logits`` or ``labels``) is read: an FP32 ``[N, C]`` tensor, or INT labels ``[N]``
(then one-hot probabilities). Queries go out in request batches of ``batch_size`` images, at most
``concurrency`` at once, at most ``rate`` requests per second, each with a ``timeout`` and up to
``retries`` retries with exponential backoff (httpx + tenacity) on connection errors, timeouts,
429 and 5xx answers; other 4xx answers fail at once with the server's message.

Every answer is stored in an :class:`AnswerCache` (SQLite, keyed by the teacher's identity and a
hash of the input image, committed after each request), so a killed or repeated attack never
pays twice for an image. A :class:`QueryBudget` caps the images actually sent (cache hits are
free); a request that would exceed it is never sent (:class:`BudgetExhausted`).

The identity of a URL teacher is the URL plus a hash of its answer to the fixed probe
(:meth:`Teacher.probe_input`): the probe is sent, uncached, each time the teacher is opened, so a
model retrained behind the same URL gets a new identity and is never answered from an old cache.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from tenacity import (
    RetryError,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from undistill.config import InputSpec
from undistill.teachers.base import BudgetExhausted, Teacher, TeacherError

OUTPUT_NAMES = ("probabilities", "probs", "logits", "labels", "output")


class QueryBudget:
    """At most ``limit`` images sent (thread-safe); ``None``: unlimited."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise TeacherError(f"budget must be at least 1 image, got {limit}")
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, n: int) -> None:
        with self._lock:
            if self.limit is not None and self.used + n > self.limit:
                raise BudgetExhausted(f"query budget of {self.limit} images spent ({self.used} "
                                      f"sent); {n} more were asked for and not sent")
            self.used += n

    def release(self, n: int) -> None:
        """Give back a reservation whose request failed for good (nothing was answered)."""
        with self._lock:
            self.used -= n

    @property
    def left(self) -> int | None:
        return None if self.limit is None else self.limit - self.used


class AnswerCache:
    """Answers on disk: SQLite (WAL), one row per (teacher identity, input hash)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS answers (teacher TEXT NOT NULL, "
                             "key TEXT NOT NULL, answer BLOB NOT NULL, PRIMARY KEY (teacher, key))")

    def get_many(self, teacher: str, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, answer FROM answers WHERE teacher = ? AND "
                                        f"key IN ({marks})", [teacher, *chunk]).fetchall()
                found.update({k: np.frombuffer(a, dtype=np.float32) for k, a in rows})
        return found

    def put_many(self, teacher: str, items: dict[str, np.ndarray]) -> None:
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
                                 [(teacher, k, np.asarray(v, dtype=np.float32).tobytes())
                                  for k, v in items.items()])

    def count(self, teacher: str | None = None) -> int:
        with self._lock:
            if teacher is None:
                return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM answers WHERE teacher = ?",
                                        [teacher]).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def input_key(row: np.ndarray) -> str:
    """Hash of one float32 image (shape and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(row.shape).encode())
    h.update(np.ascontiguousarray(row, dtype=np.float32).tobytes())
    return h.hexdigest()


class _Retryable(Exception):
    pass


def _retryable(e: BaseException) -> bool:
    return isinstance(e, _Retryable | httpx.TransportError)


class RemoteTeacher(Teacher):
    """A model behind an Open Inference Protocol URL (``http(s)://host:port/v2/models/NAME``)."""

    kind = "url"

    def __init__(self, url: str, spec: InputSpec | None = None, *, api_key: str | None = None,
                 batch_size: int = 64, concurrency: int = 4, rate: float | None = None,
                 timeout: float = 30.0, retries: int = 5, backoff: float = 0.5,
                 cache: AnswerCache | Path | str | None = None, budget: int | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise TeacherError(f"{url}: not an http(s) URL")
        super().__init__(url.rstrip("/"), spec)
        if batch_size < 1 or concurrency < 1 or retries < 0 or timeout <= 0:
            raise TeacherError(f"{url}: batch_size, concurrency >= 1, retries >= 0, timeout > 0 "
                               f"(got {batch_size}, {concurrency}, {retries}, {timeout})")
        self.batch_size, self.concurrency = batch_size, concurrency
        self.rate, self.retries, self.backoff = rate, retries, backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.__dict__["_http"] = httpx.Client(timeout=timeout, headers=headers,
                                              limits=httpx.Limits(max_connections=concurrency))
        if isinstance(cache, str | Path):
            cache = AnswerCache(Path(cache))
        self.__dict__["cache"] = cache
        self.__dict__["budget"] = QueryBudget(budget)
        self._rate_lock = threading.Lock()
        self._next_slot = 0.0
        self.sent = 0  # images answered by the server to this client (probe included)

    # ---------------------------------------------------------------- one request
    def _wait_for_slot(self) -> None:
        if not self.rate:
            return
        with self._rate_lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            time.sleep(slot - now)

    def _post(self, x: np.ndarray) -> np.ndarray:
        body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                            "data": x.reshape(-1).tolist()}]}

        @retry(retry=retry_if_exception(_retryable), stop=stop_after_attempt(self.retries + 1),
               wait=wait_exponential(multiplier=self.backoff, min=self.backoff, max=30), reraise=False)
        def send() -> httpx.Response:
            self._wait_for_slot()
            r = self._http.post(f"{self.source}/infer", json=body)
            if r.status_code == 429 or r.status_code >= 500:
                raise _Retryable(f"HTTP {r.status_code}: {r.text[:200]}")
            return r

        try:
            r = send()
        except RetryError as e:
            last = e.last_attempt.exception()
            raise TeacherError(f"{self.source}: no answer after {self.retries + 1} attempts "
                               f"({type(last).__name__}: {last})") from None
        if r.status_code >= 400:
            raise TeacherError(f"{self.source}: HTTP {r.status_code}: {r.text[:300]}")
        return self._parse(r, x.shape[0])

    def _parse(self, r: httpx.Response, n: int) -> np.ndarray:
        try:
            doc = r.json()
        except ValueError:
            raise TeacherError(f"{self.source}: the answer is not JSON: {r.text[:120]!r}") from None
        outputs = doc.get("outputs") if isinstance(doc, dict) else None
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
            raise TeacherError(f"{self.source}: the answer has no 'outputs' list (Open Inference "
                               f"Protocol): {r.text[:120]!r}")
        named = [o for o in outputs if o.get("name") in OUTPUT_NAMES]
        out = named[0] if named else outputs[0]
        try:
            shape = [int(s) for s in out["shape"]]
            data = np.asarray(out["data"], dtype=np.float32).reshape(shape)
        except (KeyError, TypeError, ValueError):
            raise TeacherError(f"{self.source}: output {out.get('name')!r} has no valid 'shape' "
                               f"and 'data'") from None
        if str(out.get("datatype", "FP32")).upper().startswith(("INT", "UINT")) and data.ndim == 1:
            if self.spec.num_classes is None:
                raise TeacherError(f"{self.source}: answers labels only; give num_classes")
            if data.min(initial=0) < 0 or data.max(initial=0) >= self.spec.num_classes:
                raise TeacherError(f"{self.source}: a label outside [0, {self.spec.num_classes})")
            data = np.eye(self.spec.num_classes, dtype=np.float32)[data.astype(np.int64)]
        if data.ndim != 2 or data.shape[0] != n:
            raise TeacherError(f"{self.source}: answered shape {list(data.shape)} to {n} image(s); "
                               f"expected [{n}, num_classes]")
        return data

    # ---------------------------------------------------------------- a batch, through the cache
    @property
    def identity(self) -> str:
        if self._digest is None:
            raise TeacherError(f"{self.source}: identity unknown until the teacher is probed")
        return self._digest

    def probe(self) -> torch.Tensor:
        """Send the fixed probe (never from the cache); its answer fixes the identity."""
        x = self.probe_input().numpy()
        self.budget.reserve(1)
        try:
            out = self._post(x)
        except TeacherError:
            self.budget.release(1)
            raise
        self.sent += 1
        t = torch.from_numpy(out)
        self.check_answer(t, 1)
        h = hashlib.sha256(self.source.encode())
        h.update(np.round(out.astype(np.float64), 4).astype(np.float32).tobytes())
        self._digest = f"url:{h.hexdigest()[:24]}"
        return t

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        if self._digest is None:
            self.probe()
        arr = x.detach().cpu().float().numpy()
        keys = [input_key(row) for row in arr]
        cache = self.cache
        known = cache.get_many(self.identity, list(set(keys))) if cache is not None else {}
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        if missing:
            self.budget.reserve(len(missing))
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            rows = [first[k] for k in missing]
            chunks = [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
            done, error = 0, None
            try:
                with ThreadPoolExecutor(max_workers=min(self.concurrency, len(chunks))) as pool:
                    futures = {pool.submit(self._post, arr[c]): c for c in chunks}
                    for fut in as_completed(futures):
                        c = futures[fut]
                        try:
                            out = fut.result()
                        except TeacherError as e:
                            error = error or e
                            continue
                        got = {keys[i]: out[j] for j, i in enumerate(c)}
                        if cache is not None:
                            cache.put_many(self.identity, got)  # committed: a kill loses nothing paid
                        known.update(got)
                        done += len(c)
                        self.sent += len(c)
            finally:
                self.budget.release(len(missing) - done)
            if error is not None:
                raise error
        out = np.stack([known[k] for k in keys])
        t = torch.from_numpy(out)
        if self.spec.num_classes is not None and t.shape[1] != self.spec.num_classes:
            raise TeacherError(f"{self.source}: answered {t.shape[1]} classes, expected "
                               f"{self.spec.num_classes}")
        if not torch.isfinite(t).all():
            raise TeacherError(f"{self.source}: answered NaN or infinite values")
        return t

    def close(self) -> None:
        self._http.close()
        if self.cache is not None:
            self.cache.close()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sent": self.sent, "budget": self.budget.limit}
