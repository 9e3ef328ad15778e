"""Build the embedded Fashion-MNIST subset shipped in the package (run once; output committed).

    python scripts/make_embedded.py  # reads /usr/share/datasets/fashion-mnist (Debian package)

Picks a class-balanced subset with a fixed seed: 1000 training and 400 test images per class,
from the official training and test splits respectively, and writes gzipped IDX files.
Fashion-MNIST is (c) Zalando SE, MIT licence (see the LICENSE file written beside the data).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from undistill.data import load_dataset

OUT = Path(__file__).resolve().parents[1] / "src/undistill/data/embedded/fashion-mnist-mini"
PER_CLASS = {"train": 1000, "t10k": 400}
SEED = 2022

LICENSE = """Fashion-MNIST subset (10,000 training and 4,000 test images of the original dataset)
Source: https://github.com/zalandoresearch/fashion-mnist (via Debian's dataset-fashion-mnist)

The MIT License (MIT)
Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.GzipFile(path, "wb", mtime=0, compresslevel=9) as f:
        f.write(header + array.astype(np.uint8).tobytes())


def main() -> None:
    ds = load_dataset("fashion-mnist")
    rng = np.random.default_rng(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    for prefix, (images, labels) in {"train": (ds.train_images, ds.train_labels),
                                     "t10k": (ds.test_images, ds.test_labels)}.items():
        y = labels.numpy()
        keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), PER_CLASS[prefix],
                                                  replace=False) for c in range(10)]))
        write_idx(OUT / f"{prefix}-images-idx3-ubyte.gz", images.numpy()[keep, 0])
        write_idx(OUT / f"{prefix}-labels-idx1-ubyte.gz", y[keep])
    (OUT / "LICENSE").write_text(LICENSE)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
