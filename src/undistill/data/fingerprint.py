"""Content fingerprints of dataset sources: what makes ``--data-root A`` and ``--data-root B`` two runs.

A run's id hashes its config. The data a run reads from disk enters that id through
``DataConfig.fingerprint``, which :func:`undistill.runs.bind_data` fills in with
``dataset_fingerprint(name, root)`` before a run is looked up, trained or loaded.

The rule every source follows:

- ``""``, the constant fingerprint, for data at the source's own default location: data shipped
  inside the package (``digits``, ``fashion-mnist-mini``) or installed by the OS package
  (Debian's ``/usr/share/datasets/fashion-mnist``). A field at its default is left out of the run
  identity, so the ids of runs on those data are the ids they always had.
- Otherwise a hash of the files the loader reads (:func:`fingerprint_files`): each file's path
  relative to the dataset directory and its size, plus sampled bytes of up to ``MAX_SAMPLED``
  files (:data:`WINDOWS` evenly spaced windows of :data:`WINDOW` bytes each, the whole file when it
  is small). Modification times are not used, so a copy of the same files (``cp -r``, another
  machine) keeps its runs. An edit that keeps every file's size and misses the sampled bytes is
  not seen: the price of reading a few MiB instead of the whole dataset.

A new source registers one function next to its loader; it takes the same ``root`` as the loader
(None: the default location) and returns the fingerprint, raising ``DatasetError`` when the data
is missing, exactly as the loader would::

    @FINGERPRINTS.register("cifar10-jpeg")
    def cifar10_jpeg_fingerprint(root: Path | None) -> str:
        archive = find_archive(root)          # the loader's own lookup
        return fingerprint_files(archive.parent, [archive])

(``cifar10-jpeg`` in ``archive.py`` is registered this way.) A source read from a directory tree
uses :func:`fingerprint_tree`, e.g. ``fingerprint_tree(root, ("train", "test"))``. A dataset
without a registered function falls back to :func:`fingerprint_tree` of its ``root`` (every file
below it), and ``""`` when ``root`` is None; ``tests/test_fingerprint.py`` checks that every
registered dataset has its own function.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from undistill.data.base import DatasetError
from undistill.registry import Registry

#: How many files of a dataset contribute content (evenly spaced in sorted order); all others
#: contribute their relative path and size only.
MAX_SAMPLED = 64
#: Bytes per sampled window, and windows per file (the first at the start, the last at the end).
WINDOW = 16 * 1024
WINDOWS = 8
DIGEST_CHARS = 16

# A fingerprint function takes the data directory (None: the source's default) and returns the
# fingerprint: "" for data at the default location, else fingerprint_files(...) of what it reads.
Fingerprint = Callable[[Path | None], str]
FINGERPRINTS: Registry[Fingerprint] = Registry("dataset fingerprint")


def _sample(path: Path, size: int) -> bytes:
    """The bytes of ``path`` a fingerprint reads: all of a small file, else WINDOWS windows."""
    with path.open("rb") as f:
        if size <= WINDOW * WINDOWS:
            return f.read()
        parts = []
        for i in range(WINDOWS):
            f.seek((size - WINDOW) * i // (WINDOWS - 1))
            parts.append(f.read(WINDOW))
        return b"".join(parts)


def _digest(entries: list[tuple[str, str, int]]) -> str:
    """Entries (relative posix path, path to read, size) -> the fingerprint."""
    entries = sorted(entries)
    step = max(1, -(-len(entries) // MAX_SAMPLED))  # ceil: at most MAX_SAMPLED sampled files
    h = hashlib.sha256()
    for i, (rel, path, size) in enumerate(entries):
        h.update(f"{rel}\0{size}\0".encode())
        if i % step == 0:
            try:
                data = _sample(Path(path), size)
            except OSError as e:
                raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
            h.update(hashlib.sha256(data).digest())
    return h.hexdigest()[:DIGEST_CHARS]


def fingerprint_files(base: Path, files: Iterable[Path]) -> str:
    """A 16-hex-digit digest of ``files`` (named relative to ``base``): paths, sizes, sampled bytes.

    The order of ``files`` does not matter; a missing or unreadable file is a DatasetError.
    """
    base = Path(base)
    entries = []
    for p in files:
        p = Path(p)
        try:
            entries.append((p.relative_to(base).as_posix(), str(p), p.stat().st_size))
        except FileNotFoundError:
            raise DatasetError(f"missing file {p}") from None
        except ValueError:
            raise ValueError(f"{p} is not inside {base}") from None
    return _digest(entries)


def _walk(directory: str, prefix: str, out: list[tuple[str, str, int]]) -> None:
    """Append (relative path, path, size) of every non-hidden regular file below ``directory``."""
    with os.scandir(directory) as entries:
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                _walk(e.path, f"{prefix}{e.name}/", out)
            elif e.is_file():
                out.append((f"{prefix}{e.name}", e.path, e.stat().st_size))


def fingerprint_tree(root: Path, parts: Sequence[str] | None = None) -> str:
    """The fingerprint of every non-hidden file below ``root`` (only below ``root/<part>`` for the
    ``parts`` that exist, when given), named relative to ``root``. Tens of thousands of files take
    well under a second: one ``scandir`` and ``stat`` per file, bytes of at most MAX_SAMPLED."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data directory {root} does not exist")
    entries: list[tuple[str, str, int]] = []
    if parts is None:
        _walk(str(root), "", entries)
    else:
        for part in parts:
            if (root / part).is_dir():
                _walk(str(root / part), f"{part}/", entries)
    return _digest(entries)


def same_directory(a: Path | None, b: Path | None) -> bool:
    """Whether two directories are the same place (after resolving links); False for None."""
    if a is None or b is None:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
