"""A run folder has one owner: the process holding its lock file.

``own_run`` takes ``runs_dir/.locks/<run_id>.lock`` (a ``filelock.FileLock``, an OS-level lock the
kernel releases when its process dies, even by ``kill -9``) around the training of one run. A second
process launching the same run prints one line saying the run is in progress and waits; once it
owns the lock it finds the finished result and reuses it (or resumes from the last checkpoint
when the first process was killed). Lock files live outside the run folders so a folder can be
removed while its lock is held.

While it owns a folder, a process also tidies it:

- on entry, orphaned ``*.tmp`` files (an atomic write cut short by a kill) are deleted;
- on a failure or interrupt before the first checkpoint (bad data, a missing teacher, a first
  epoch that diverged), the folder is removed rather than left holding only ``config.json``.

Under torchrun only rank 0 takes the lock (every rank trains the same run, and the other ranks
follow rank 0 through the engine's barriers).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from undistill.runs import BEST, CONFIG, LAST, METRICS, RESULT

LOCKS = ".locks"
#: What a run folder may hold before its first checkpoint; only then is it removed on failure.
DISPOSABLE = (CONFIG, METRICS, BEST, Path(BEST).with_suffix(".json").name)


def lock_path(runs_dir: Path, run_id: str) -> Path:
    return Path(runs_dir) / LOCKS / f"{run_id}.lock"


def remove_orphans(folder: Path) -> list[Path]:
    """Delete the ``*.tmp`` files left in ``folder`` by interrupted atomic writes; returns them."""
    if not folder.is_dir():
        return []
    gone = sorted(set(folder.glob("*.tmp")) | set(folder.glob(".*.tmp")))
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def discard_unstarted(folder: Path) -> bool:
    """Remove ``folder`` when it holds no checkpoint to resume from; True if it was removed.

    Only the files a run writes before its first ``last.safetensors`` are deleted; a folder with
    anything else in it is left alone.
    """
    if not folder.is_dir() or (folder / LAST).exists() or (folder / RESULT).exists():
        return False
    remove_orphans(folder)
    if any(p.name not in DISPOSABLE for p in folder.iterdir()):
        return False
    for name in DISPOSABLE:
        (folder / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()
    return not folder.exists()


def _print(text: str) -> None:
    from undistill.progress import console

    console.print(text, markup=False, highlight=False)


@contextlib.contextmanager
def own_run(folder: Path, runs_dir: Path, run_id: str,
            notify: Callable[[str], None] = _print) -> Iterator[None]:
    """Hold the lock of run ``run_id`` (folder ``folder``) for the duration of the block.

    Waits, after one ``notify`` line, while another process holds it.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    path = lock_path(runs_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        notify(f"run {run_id} is in progress in another process (lock {path}); waiting for it to "
               f"finish, then its result is reused")
        lock.acquire()
    try:
        remove_orphans(folder)
        try:
            yield
        except BaseException:
            discard_unstarted(folder)
            raise
    finally:
        lock.release()
