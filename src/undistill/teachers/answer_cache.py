"""What a URL teacher paid for: its answers on disk, and the budget of images it may send.

:class:`AnswerCache`: SQLite (WAL), one row per (teacher identity, input hash).
A row is a float32 vector (one image's answer). Rows are written only after the answer was
checked, and read back only if they still look like an answer (finite, the teacher's class count);
a row that does not is deleted, so the image is asked again. A file that is not an answer cache
(damaged, or another database) is a one-line :class:`TeacherError` naming it: the cache only
saves queries, so moving it aside (or deleting it) loses nothing but answers already paid for.

:class:`QueryBudget`: the images that may reach the server (how they count: ``remote.py``).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from undistill.teachers.errors import BudgetExhausted, TeacherError


def input_key(row: np.ndarray) -> str:
    """Hash of one float32 image (shape and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(row.shape).encode())
    h.update(np.ascontiguousarray(row, dtype=np.float32).tobytes())
    return h.hexdigest()


def valid_row(blob: bytes, width: int | None) -> np.ndarray | None:
    """A stored answer as float32, or None if it is not one (length, class count, NaN/inf)."""
    if not isinstance(blob, bytes) or not blob or len(blob) % 4:
        return None
    row = np.frombuffer(blob, dtype=np.float32)
    if (width is not None and row.size != width) or not np.isfinite(row).all():
        return None
    return row


class AnswerCache:
    """Answers on disk: SQLite (WAL), one row per (teacher identity, input hash)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.dropped = 0  # rows read back that were no valid answer (deleted, asked again)
        with self._errors():
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            with self._lock, self._db:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS answers (teacher TEXT NOT NULL, key TEXT "
                                 "NOT NULL, answer BLOB NOT NULL, PRIMARY KEY (teacher, key))")
                self._db.execute("SELECT teacher, key, answer FROM answers LIMIT 1").fetchall()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise TeacherError(f"{self.path}: cannot use this answer cache ({e}); if it is damaged, "
                               f"move it aside or delete it: it only saves queries (answers paid "
                               f"for are asked again)") from None

    def get_many(self, teacher: str, keys: list[str], width: int | None = None
                 ) -> dict[str, np.ndarray]:
        """The valid answers stored for ``keys``; invalid rows (see :func:`valid_row`) are deleted."""
        found: dict[str, np.ndarray] = {}
        bad: list[str] = []
        with self._lock, self._errors():
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, answer FROM answers WHERE teacher = ? AND "
                                        f"key IN ({marks})", [teacher, *chunk]).fetchall()
                for k, blob in rows:
                    row = valid_row(blob, width)
                    if row is None:
                        bad.append(k)
                    else:
                        found[k] = row
            if bad:
                with self._db:
                    self._db.executemany("DELETE FROM answers WHERE teacher = ? AND key = ?",
                                         [(teacher, k) for k in bad])
                self.dropped += len(bad)
        return found

    def put_many(self, teacher: str, items: dict[str, np.ndarray]) -> None:
        with self._lock, self._errors(), self._db:
            self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?)",
                                 [(teacher, k, np.asarray(v, dtype=np.float32).tobytes())
                                  for k, v in items.items()])

    def count(self, teacher: str | None = None) -> int:
        with self._lock, self._errors():
            if teacher is None:
                return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM answers WHERE teacher = ?",
                                        [teacher]).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class QueryBudget:
    """At most ``limit`` images that may reach the server (thread-safe); ``None``: unlimited."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise TeacherError(f"budget must be at least 1 image, got {limit}")
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, n: int, retry: bool = False) -> None:
        with self._lock:
            if self.limit is not None and self.used + n > self.limit:
                what = f"a retry of {n} images was" if retry else f"{n} more were asked for and"
                raise BudgetExhausted(f"query budget of {self.limit} images spent ({self.used} "
                                      f"sent); {what} not sent")
            self.used += n

    def release(self, n: int) -> None:
        """Give back a reservation whose request never reached the server."""
        with self._lock:
            self.used -= n

    @property
    def left(self) -> int | None:
        return None if self.limit is None else self.limit - self.used
