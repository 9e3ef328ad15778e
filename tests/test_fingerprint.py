"""Data identity: every source's content fingerprint, and runs bound to the data they read."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from undistill.config import Runtime, parse_config
from undistill.data import (
    DATASETS,
    FINGERPRINTS,
    DatasetError,
    dataset_fingerprint,
    fingerprint_files,
)
from undistill.data.fingerprint import WINDOW, WINDOWS
from undistill.executor import ensure_trained
from undistill.presets import teacher_config
from undistill.runs import bind_data, load_run_model, run_dir


def make_folder(root: Path, shade: int, per_class: int = 6, classes: tuple[str, ...] = ("a", "b")
                ) -> Path:
    """A tiny image-folder dataset (8x8 grey PNGs); ``shade`` makes two of them differ."""
    rng = np.random.default_rng(shade)
    for split, n in (("train", per_class), ("test", 2)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = (rng.integers(0, 60, (8, 8)) + 120 * c + shade).clip(0, 255)
                Image.fromarray(pixels.astype(np.uint8), "L").save(root / split / name / f"{i}.png")
    return root


def folder_config(epochs: int = 1):
    d = teacher_config("folder", "cnn", width=0.25, epochs=epochs)
    d["optim"]["batch_size"] = 4
    return parse_config(d)


def test_every_dataset_registers_its_own_fingerprint() -> None:
    assert set(DATASETS.names()) <= set(FINGERPRINTS.names())


def test_embedded_and_default_data_have_the_constant_fingerprint() -> None:
    assert dataset_fingerprint("digits") == ""
    assert dataset_fingerprint("fashion-mnist-mini") == ""
    embedded = Path(__file__).parents[1] / "src/undistill/data/embedded/fashion-mnist-mini"
    assert dataset_fingerprint("fashion-mnist-mini", embedded) == ""  # its default location
    # run ids of runs on embedded data are the ids they had before fingerprints existed
    d = teacher_config("digits", "cnn", width=0.25, epochs=2)
    cfg = parse_config(d)
    assert bind_data(cfg, None).run_id == cfg.run_id
    assert "fingerprint" not in cfg.identity()["data"]


def test_a_copy_of_the_embedded_files_elsewhere_is_fingerprinted(tmp_path: Path) -> None:
    embedded = Path(__file__).parents[1] / "src/undistill/data/embedded/fashion-mnist-mini"
    copy = Path(shutil.copytree(embedded, tmp_path / "fm"))
    fp = dataset_fingerprint("fashion-mnist-mini", copy)
    assert len(fp) == 16
    (copy / "LICENSE").unlink()  # not read by the loader: not part of the fingerprint
    assert dataset_fingerprint("fashion-mnist-mini", copy) == fp
    with (copy / "t10k-labels-idx1-ubyte.gz").open("ab") as f:
        f.write(b"\0")
    assert dataset_fingerprint("fashion-mnist-mini", copy) != fp


def test_folder_fingerprint_follows_content_not_location(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "A", shade=0)
    b = make_folder(tmp_path / "B", shade=40)
    fa, fb = dataset_fingerprint("folder", a), dataset_fingerprint("folder", b)
    assert fa != fb and len(fa) == 16
    copy = Path(shutil.copytree(a, tmp_path / "copy"))  # new mtimes, same files
    assert dataset_fingerprint("folder", copy) == fa
    (copy / "train/a/0.png").rename(copy / "train/b/extra.png")  # a relabelled image
    assert dataset_fingerprint("folder", copy) != fa
    with pytest.raises(DatasetError, match="no default location"):
        dataset_fingerprint("folder")
    with pytest.raises(DatasetError, match="does not exist"):
        dataset_fingerprint("cifar10", tmp_path / "nothing")


def test_cifar10_jpeg_archive_and_folder_fingerprints(tmp_path: Path) -> None:
    from test_archive import files, make_tar

    members = files()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_tar(tmp_path / "a/cifar10-jpeg.tar.gz", members)
    b = make_tar(tmp_path / "b/cifar10-jpeg.tar.gz", {**members, "train/zz/0000.jpg": b"x"})
    fa = dataset_fingerprint("cifar10-jpeg", a)
    assert fa == dataset_fingerprint("cifar10-jpeg", tmp_path / "a")  # the folder holding it
    assert fa != dataset_fingerprint("cifar10-jpeg", b)
    unpacked = tmp_path / "unpacked"
    for name, data in members.items():
        (unpacked / name).parent.mkdir(parents=True, exist_ok=True)
        (unpacked / name).write_bytes(data)
    fu = dataset_fingerprint("cifar10-jpeg", unpacked)
    (unpacked / "README").write_text("beside the splits: not part of the data")
    assert dataset_fingerprint("cifar10-jpeg", unpacked) == fu and len(fu) == 16


def test_two_data_roots_are_two_runs(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "A", shade=0)
    b = make_folder(tmp_path / "B", shade=40)
    cfg = folder_config()
    runs = tmp_path / "runs"
    ra = ensure_trained(cfg, Runtime(runs_dir=runs, data_root=a, device="cpu", progress=False))
    rb = ensure_trained(cfg, Runtime(runs_dir=runs, data_root=b, device="cpu", progress=False))
    assert ra.run_id != rb.run_id and not rb.cached  # B is trained, not answered from A's cache
    assert Path(ra.run_dir) == run_dir(bind_data(cfg, a), runs)
    again = ensure_trained(cfg, Runtime(runs_dir=runs, data_root=a, device="cpu", progress=False))
    assert again.cached and again.run_id == ra.run_id
    # a run trained on A is not loaded against B's files
    bound_a = bind_data(cfg, a)
    with pytest.raises(DatasetError, match="pass the --data-root it was trained with"):
        load_run_model(bound_a, runs, b)
    assert load_run_model(bound_a, runs, a) is not None


# ------------------------------------------------------------------------------ properties

names = st.lists(st.text("abcdefgh", min_size=1, max_size=6), min_size=1, max_size=6, unique=True)
contents = st.binary(min_size=0, max_size=3 * WINDOW * WINDOWS // 2)


@settings(max_examples=30, deadline=None)
@given(files=st.dictionaries(st.text("abcdefgh", min_size=1, max_size=6), contents, min_size=1,
                             max_size=5), data=st.data())
def test_fingerprint_properties(tmp_path_factory, files: dict[str, bytes], data) -> None:
    root = tmp_path_factory.mktemp("fp")
    for name, blob in files.items():
        (root / name).write_bytes(blob)
    paths = [root / n for n in files]
    fp = fingerprint_files(root, paths)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fingerprint_files(root, list(reversed(paths))) == fp  # order does not matter
    other = tmp_path_factory.mktemp("fp")  # the same files elsewhere: the same fingerprint
    for name, blob in files.items():
        (other / name).write_bytes(blob)
    assert fingerprint_files(other, [other / n for n in files]) == fp
    # a changed size, or a changed byte of a small file, changes it
    name = data.draw(st.sampled_from(sorted(files)))
    (other / name).write_bytes(files[name] + b"x")
    assert fingerprint_files(other, [other / n for n in files]) != fp
    if 0 < len(files[name]) <= WINDOW * WINDOWS:
        i = data.draw(st.integers(0, len(files[name]) - 1))
        flipped = bytearray(files[name])
        flipped[i] ^= 0xFF
        (other / name).write_bytes(bytes(flipped))
        assert fingerprint_files(other, [other / n for n in files]) != fp
    # a renamed file changes it
    (other / name).write_bytes(files[name])
    (other / name).rename(other / (name + "_"))
    renamed = [other / (n + "_" if n == name else n) for n in files]
    assert fingerprint_files(other, renamed) != fp


@settings(max_examples=20, deadline=None)
@given(names)
def test_fingerprint_of_missing_file_is_a_dataset_error(tmp_path_factory, listed: list[str]) -> None:
    root = tmp_path_factory.mktemp("missing")
    with pytest.raises(DatasetError, match="missing file"):
        fingerprint_files(root, [root / n for n in listed])
