"""Dataset loaders: round-trips through each on-disk format (tiny files in tmp_path) and errors."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from undistill.data import DATASETS, DatasetError, load_dataset
from undistill.data.cifar import CIFAR_MEAN, CIFAR_STD
from undistill.data.folder import TINY_IMAGENET
from undistill.data.idx import FASHION_CLASSES

# ---------------------------------------------------------------------------------------- IDX


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_idx_dir(root: Path, gz: bool, n_train: int = 6, n_test: int = 4, size: int = 5) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        write_idx(root / name, arr, gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    arrays = make_idx_dir(tmp_path, gz)
    ds = load_dataset("mnist", tmp_path)
    assert ds.train_images.dtype == torch.uint8 and ds.train_images.shape == (6, 1, 5, 5)
    assert torch.equal(ds.train_images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert torch.equal(ds.test_labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]).long())
    assert ds.train_labels.dtype == torch.int64
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.mean == (0.1307,) and ds.std == (0.3081,)
    assert ds.augment.crop_padding == 2 and not ds.augment.flip


def test_fashion_names_and_flip(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, gz=True)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert ds.classes == FASHION_CLASSES and ds.classes[0] == "T-shirt/top"
    assert ds.augment.flip and ds.augment.crop_padding == 2
    assert ds.mean == (0.2860,) and ds.std == (0.3530,)


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist absent"
)
def test_real_fashion_mnist_default_root() -> None:
    ds = load_dataset("fashion-mnist")
    assert ds.train_images.shape == (60000, 1, 28, 28)
    assert ds.test_images.shape == (10000, 1, 28, 28)
    assert sorted(torch.unique(ds.train_labels).tolist()) == list(range(10))


def test_mnist_without_root_says_data_root() -> None:
    with pytest.raises(DatasetError, match="--data-root"):
        load_dataset("mnist")


def test_idx_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "does not exist" in str(err.value)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)


def test_idx_missing_file(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"missing file .*t10k-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)


def test_idx_truncated(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "truncated" in msg and "(6, 5, 5)" in msg


def test_idx_bad_magic(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, gz=False)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)
    assert "train-labels-idx1-ubyte" in str(err.value) and "bad magic" in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "cut"])
def test_idx_corrupt_gzip(tmp_path: Path, damage: str) -> None:
    make_idx_dir(tmp_path, gz=True)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(b"this is not gzip data" if damage == "garbage" else raw[: len(raw) // 2])
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(err.value) and "gzip" in str(err.value)


def test_idx_count_mismatch(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=False)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)
    msg = str(err.value)
    assert "6 images" in msg and "5 labels" in msg and "train-labels-idx1-ubyte" in msg


def test_idx_images_must_be_3d(tmp_path: Path) -> None:
    make_idx_dir(tmp_path, gz=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((6, 25), np.uint8), gz=False)
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*2 dimensions.*expected 3"):
        load_dataset("mnist", tmp_path)


# -------------------------------------------------------------------------------------- CIFAR


def dump(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def cifar_batch(n: int, label_key: bytes, classes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"batch",
        label_key: rng.integers(0, classes, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }


def make_cifar10(root: Path, n: int = 3) -> tuple[list[dict], dict]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = [cifar_batch(n, b"labels", 10, seed=i) for i in range(5)]
    for i, batch in enumerate(train, start=1):
        dump(folder / f"data_batch_{i}", batch)
    test = cifar_batch(n, b"labels", 10, seed=9)
    dump(folder / "test_batch", test)
    names = [f"class{i}".encode() for i in range(10)]
    dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": n})
    return train, test


def make_cifar100(root: Path, n: int = 7) -> tuple[dict, dict]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train, test = cifar_batch(n, b"fine_labels", 100, 1), cifar_batch(n, b"fine_labels", 100, 2)
    for batch in (train, test):
        batch[b"coarse_labels"] = [0] * n
    dump(folder / "train", train)
    dump(folder / "test", test)
    names = [f"fine{i}".encode() for i in range(100)]
    dump(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"c"] * 20})
    return train, test


@pytest.mark.parametrize("inside", [False, True])
def test_cifar10_round_trip(tmp_path: Path, inside: bool) -> None:
    train, test = make_cifar10(tmp_path)
    ds = load_dataset("cifar10", tmp_path / "cifar-10-batches-py" if inside else tmp_path)
    assert ds.train_images.shape == (15, 3, 32, 32) and ds.test_images.shape == (3, 3, 32, 32)
    expected = np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32)
    assert torch.equal(ds.train_images, torch.from_numpy(expected))
    assert ds.train_labels.tolist() == sum((b[b"labels"] for b in train), [])
    assert ds.test_labels.tolist() == test[b"labels"]
    assert ds.classes == [f"class{i}" for i in range(10)]
    assert ds.mean == CIFAR_MEAN and ds.std == CIFAR_STD
    assert ds.augment.crop_padding == 4 and ds.augment.flip


def test_cifar100_round_trip(tmp_path: Path) -> None:
    train, test = make_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.classes[7] == "fine7"
    assert ds.train_labels.tolist() == train[b"fine_labels"]
    expected = test[b"data"].reshape(-1, 3, 32, 32)
    assert torch.equal(ds.test_images, torch.from_numpy(expected))
    assert ds.mean == CIFAR_MEAN  # CIFAR-10 statistics, as the reference does


class OpenFile:
    """Unpickling this would create a file: a stand-in for a harmful payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


class EvalCode:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (eval, (f"__import__('pathlib').Path({str(self.path)!r}).touch()",))


@pytest.mark.parametrize(("payload", "name"), [(OpenFile, "open"), (EvalCode, "eval")])
def test_cifar_refuses_malicious_pickle(tmp_path: Path, payload: type, name: str) -> None:
    make_cifar10(tmp_path)
    marker = tmp_path / "side_effect_happened"
    batch = cifar_batch(3, b"labels", 10, seed=0)
    batch[b"data"] = payload(marker)
    dump(tmp_path / "cifar-10-batches-py" / "data_batch_1", batch)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", tmp_path)
    msg = str(err.value)
    assert "refused" in msg and f".{name}" in msg and "data_batch_1" in msg
    assert not marker.exists()


def test_cifar_wrong_shape(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    batch = cifar_batch(3, b"labels", 10, seed=0)
    batch[b"data"] = np.zeros((3, 3000), np.uint8)
    dump(tmp_path / "cifar-10-batches-py" / "data_batch_3", batch)
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", tmp_path)
    assert "data_batch_3" in str(err.value) and "3072" in str(err.value)


def test_cifar_label_count_and_range(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    batch = cifar_batch(3, b"labels", 10, seed=0)
    batch[b"labels"] = [1, 2]
    dump(folder / "test_batch", batch)
    with pytest.raises(DatasetError, match=r"test_batch: 3 images but 'labels'"):
        load_dataset("cifar10", tmp_path)
    batch[b"labels"] = [1, 2, 10]
    dump(folder / "test_batch", batch)
    with pytest.raises(DatasetError, match=r"test_batch: labels span 1\.\.10, outside 0\.\.9"):
        load_dataset("cifar10", tmp_path)


def test_cifar_truncated_pickle(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", tmp_path)
    assert "data_batch_2" in str(err.value) and "corrupt or truncated" in str(err.value)


def test_cifar_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not contain cifar-100-python.*--data-root"):
        load_dataset("cifar100", tmp_path)
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DatasetError, match=r"missing file .*data_batch_5.*CIFAR-10 python version"):
        load_dataset("cifar10", tmp_path)


# ------------------------------------------------------------------------------------- folder


def save(path: Path, color: tuple[int, int, int] | int, size: int = 8, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), color).save(path)


def test_folder_round_trip(tmp_path: Path) -> None:
    save(tmp_path / "train/cat/a.png", (255, 0, 0))
    save(tmp_path / "train/cat/b.jpg", (250, 0, 0))
    save(tmp_path / "train/dog/images/c.JPEG", (0, 0, 250))  # one level down, upper case
    save(tmp_path / "train/dog/d.PNG", (0, 0, 255))
    (tmp_path / "train/dog/notes.txt").write_text("ignored")
    save(tmp_path / "val/dog/e.png", (0, 0, 255))
    save(tmp_path / "val/cat/f.png", (255, 0, 0))
    ds = load_dataset("folder", tmp_path)
    assert ds.classes == ["cat", "dog"]
    assert ds.train_images.shape == (4, 3, 8, 8) and ds.test_images.shape == (2, 3, 8, 8)
    assert ds.train_labels.tolist() == [0, 0, 1, 1]
    assert ds.test_labels.tolist() == [0, 1]  # classes visited in sorted order
    assert torch.equal(ds.test_images[0, :, 0, 0], torch.tensor([255, 0, 0], dtype=torch.uint8))
    assert ds.augment.crop_padding == 1 and ds.augment.flip and ds.augment.rotate_degrees == 0
    assert len(ds.mean) == 3 and ds.mean[1] == 0.0 and abs(ds.mean[0] - ds.mean[2]) < 0.01


def test_folder_grayscale_gives_one_channel(tmp_path: Path) -> None:
    save(tmp_path / "train/a/x.png", 10, mode="L")
    save(tmp_path / "train/b/y.png", 200, mode="L")
    save(tmp_path / "test/a/z.png", 10, mode="L")
    ds = load_dataset("folder", tmp_path)
    assert ds.channels == 1 and ds.train_images[1, 0, 3, 3] == 200


def test_tiny_imagenet_raw_val_layout(tmp_path: Path) -> None:
    root = tmp_path / "tiny-imagenet-200"
    colors = {"n01": (250, 10, 10), "n02": (10, 10, 250)}
    for wnid, color in colors.items():
        for i in range(2):
            save(root / f"train/{wnid}/images/{wnid}_{i}.JPEG", color)
        (root / f"train/{wnid}/{wnid}_boxes.txt").write_text("")
    val = ["n02", "n01", "n02"]
    for i, wnid in enumerate(val):
        save(root / f"val/images/val_{i}.JPEG", colors[wnid])
    lines = [f"val_{i}.JPEG\t{wnid}\t0\t0\t7\t7" for i, wnid in enumerate(val)]
    (root / "val/val_annotations.txt").write_text("\n".join(lines) + "\n")
    save(root / "test/images/test_0.JPEG", (0, 0, 0))  # unlabelled: must be skipped
    ds = load_dataset("tinyimagenet", tmp_path)  # the folder that contains tiny-imagenet-200
    assert ds.classes == ["n01", "n02"]
    assert ds.test_labels.tolist() == [1, 0, 1]
    reds = ds.test_images[:, 0].float().mean(dim=(1, 2))
    assert (reds > 128).tolist() == [False, True, False]  # each file went to its own class
    assert ds.mean == TINY_IMAGENET.mean and ds.std == TINY_IMAGENET.std
    assert ds.augment.rotate_degrees == 20 and ds.augment.flip and ds.augment.crop_padding == 0
    assert sorted(p.name for p in (root / "val").iterdir()) == ["images", "val_annotations.txt"]


def test_tiny_annotation_unknown_class(tmp_path: Path) -> None:
    save(tmp_path / "train/n01/images/a.JPEG", (1, 2, 3))
    save(tmp_path / "val/images/val_0.JPEG", (1, 2, 3))
    (tmp_path / "val/val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DatasetError, match=r"val_annotations.txt:1: class 'n99'"):
        load_dataset("tinyimagenet", tmp_path)


def test_folder_unknown_test_class(tmp_path: Path) -> None:
    save(tmp_path / "train/cat/a.png", (1, 2, 3))
    save(tmp_path / "test/zebra/b.png", (1, 2, 3))
    with pytest.raises(DatasetError) as err:
        load_dataset("folder", tmp_path)
    assert "'zebra'" in str(err.value) and "not among" in str(err.value)


def test_folder_mixed_sizes(tmp_path: Path) -> None:
    save(tmp_path / "train/cat/a.png", (1, 2, 3), size=8)
    save(tmp_path / "train/cat/odd.png", (1, 2, 3), size=9)
    save(tmp_path / "test/cat/b.png", (1, 2, 3), size=8)
    with pytest.raises(DatasetError) as err:
        load_dataset("folder", tmp_path)
    assert "odd.png is 9x9" in str(err.value) and "one size" in str(err.value)


def test_folder_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"missing directory .*train"):
        load_dataset("folder", tmp_path)
    (tmp_path / "train/cat").mkdir(parents=True)
    (tmp_path / "train/cat/readme.txt").write_text("no images")
    with pytest.raises(DatasetError, match=r"no images .* found in .*cat"):
        load_dataset("folder", tmp_path)
    save(tmp_path / "train/cat/a.png", (1, 2, 3))
    with pytest.raises(DatasetError, match=r"no labelled test/ or val/"):
        load_dataset("folder", tmp_path)
    with pytest.raises(DatasetError, match=r"no default location"):
        load_dataset("folder")


# ------------------------------------------------------------------------------------- digits


def test_digits_shapes_and_split() -> None:
    ds = load_dataset("digits")
    assert "digits" in DATASETS
    assert ds.train_images.shape == (1347, 1, 8, 8) and ds.test_images.shape == (450, 1, 8, 8)
    assert ds.train_images.dtype == torch.uint8 and int(ds.train_images.max()) == 255
    assert ds.augment.crop_padding == 1 and not ds.augment.flip
    test_counts = torch.bincount(ds.test_labels, minlength=10).double()
    all_counts = test_counts + torch.bincount(ds.train_labels, minlength=10)
    assert torch.all((test_counts - 0.25 * all_counts).abs() <= 1)  # stratified
    again = load_dataset("digits")
    assert torch.equal(ds.test_images, again.test_images)
    assert torch.equal(ds.train_labels, again.train_labels)
