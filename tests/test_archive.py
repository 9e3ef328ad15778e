"""The cifar10-jpeg source: archive or folder in, cached uint8 tensors out, bad input named."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from undistill.data import DatasetError, load_dataset
from undistill.data import archive as arc

CLASSES = ["cat", "dog", "ship"]


def jpeg(value: int, size: int = 8) -> bytes:
    rng = np.random.default_rng(value)
    arr = (rng.integers(0, 40, (size, size, 3)) + value).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def files(n_train: int = 3, n_test: int = 2) -> dict[str, bytes]:
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for i, c in enumerate(CLASSES):
            for j in range(n):
                out[f"{split}/{c}/{j:04d}.jpg"] = jpeg(60 * i + j)
    return out


def make_tar(path: Path, members: dict[str, bytes], dirs: list[str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for d in dirs or []:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNDISTILL_CACHE", str(cache))
    return cache


def test_archive_loads_decodes_once_and_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  _cache: Path) -> None:
    tar = make_tar(tmp_path / "cifar10-jpeg.tar.gz", files())
    ds = load_dataset("cifar10-jpeg", tar)
    assert ds.classes == CLASSES
    assert ds.train_images.shape == (9, 3, 8, 8) and ds.train_images.dtype == torch.uint8
    assert ds.test_images.shape == (6, 3, 8, 8)
    assert ds.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.augment.crop_padding == 4 and ds.augment.flip
    cached = list((_cache / "datasets").glob("cifar10-jpeg-*.safetensors"))
    assert len(cached) == 1 and not list((_cache / "datasets").glob("*.tmp"))

    def boom(path: Path) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(arc, "decode_archive", boom)
    again = load_dataset("cifar10-jpeg", tmp_path)  # a folder holding the archive
    assert torch.equal(again.train_images, ds.train_images) and again.classes == CLASSES


def test_unpacked_folder_matches_archive(tmp_path: Path) -> None:
    members = files()
    tar = make_tar(tmp_path / "a.tar.gz", members)
    root = tmp_path / "unpacked"
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    a, b = load_dataset("cifar10-jpeg", tar), load_dataset("cifar10-jpeg", root)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)


def test_changed_archive_is_decoded_again(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "x.tar.gz", files())
    first = load_dataset("cifar10-jpeg", tar)
    make_tar(tar, files(n_train=4))
    assert load_dataset("cifar10-jpeg", tar).train_images.shape[0] == 12 != first.train_images.shape[0]


def test_a_killed_decode_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         _cache: Path) -> None:
    tar = make_tar(tmp_path / "x.tar.gz", files())

    def killed(*args: object, **kwargs: object) -> None:
        Path(args[1]).write_bytes(b"partial")  # the temporary file is half written ...
        raise KeyboardInterrupt  # ... when the process is stopped

    monkeypatch.setattr(arc, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("cifar10-jpeg", tar)
    assert not list((_cache / "datasets").iterdir())


@pytest.mark.parametrize("case, expect", [
    ("truncated", "not a readable .tar.gz"),
    ("not-gzip", "not a readable .tar.gz"),
    ("non-image", "is not an image"),
    ("empty-class", "class folder has no images"),
    ("unknown-test-class", "not among the training classes"),
    ("bad-jpeg", "cannot decode image"),
])
def test_bad_archives_are_named(tmp_path: Path, case: str, expect: str) -> None:
    path = tmp_path / "bad.tar.gz"
    members = files()
    if case == "truncated":
        data = make_tar(tmp_path / "ok.tar.gz", members).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "not-gzip":
        path.write_bytes(b"this is not an archive at all" * 10)
    elif case == "non-image":
        make_tar(path, {**members, "train/cat/notes.txt": b"hello"})
    elif case == "empty-class":
        make_tar(path, members, dirs=["train/zebra/"])
    elif case == "unknown-test-class":
        make_tar(path, {**members, "test/zebra/0000.jpg": jpeg(1)})
    else:
        make_tar(path, {**members, "train/cat/9999.jpg": b"\xff\xd8 broken"})
    with pytest.raises(DatasetError, match=expect) as err:
        load_dataset("cifar10-jpeg", path)
    assert str(path) in str(err.value)


def test_missing_root_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="--data-root"):
        load_dataset("cifar10-jpeg", None)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("cifar10-jpeg", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="neither"):
        load_dataset("cifar10-jpeg", tmp_path)
