"""Image data for the auto-encoders: scikit-learn's bundled digits, arrays, ``.npy``/``.npz`` files, folders."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

__all__ = ["ImageDataset", "digits", "load_images"]


class ImageDataset:
    """Images (N, C, H, W) or flat vectors (N, D) as float32, with optional integer ``labels`` (N,).
    ``ds[i]`` is ``{"pixel_values": array, "labels": int}`` (no ``labels`` key when there are none)."""

    def __init__(self, images, labels=None, *, name: str = "images"):
        images = np.ascontiguousarray(np.asarray(images, dtype=np.float32))
        if images.ndim not in (2, 4):
            raise ValueError(f"images must be (N, C, H, W) or (N, D), got shape {images.shape}")
        if len(images) == 0:
            raise ValueError("the image dataset is empty")
        if not np.isfinite(images).all():
            bad = int(np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(1))[0])
            raise ValueError(f"images contain NaN or Inf (first at sample {bad})")
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (len(images),):
                raise ValueError(f"labels must be ({len(images)},), got {labels.shape}")
        self.images, self.labels, self.name = images, labels, name

    @property
    def sample_shape(self) -> tuple:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        item = {"pixel_values": self.images[i]}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        return item

    def subset(self, indices) -> "ImageDataset":
        indices = np.asarray(indices, dtype=np.int64)
        return ImageDataset(self.images[indices], None if self.labels is None else self.labels[indices],
                            name=self.name)


def digits(*, flatten: bool = False, scale: bool = True) -> ImageDataset:
    """scikit-learn's 1797 handwritten digits (8×8, bundled, offline): (N, 1, 8, 8), or (N, 64) with
    ``flatten``; pixel values scaled from 0..16 to [0, 1] unless ``scale=False``; ``labels`` the digits."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = bunch.images.astype(np.float32)  # (1797, 8, 8), values 0..16
    if scale:
        images /= 16.0
    images = images.reshape(len(images), -1) if flatten else images[:, None]
    return ImageDataset(images, bunch.target, name="digits")


def load_images(source, *, labels: Optional[np.ndarray] = None, key: Optional[str] = None) -> ImageDataset:
    """An :class:`ImageDataset` from an array / tensor, a ``.npy`` or ``.npz`` file (``key`` picks the
    array, else ``images``/``x``/the first; ``labels``/``y`` are read when present), or a folder of
    images (one sub-folder per class; needs Pillow), scaled to [0, 1]."""
    if hasattr(source, "detach"):
        source = source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return ImageDataset(source, labels)
    path = os.fspath(source)
    if os.path.isdir(path):
        return _image_folder(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file or directory: {path!r}")
    if path.endswith(".npy"):
        return ImageDataset(np.load(path), labels, name=os.path.basename(path))
    if path.endswith(".npz"):
        with np.load(path) as archive:
            names = list(archive.keys())
            if not names:
                raise ValueError(f"{path} holds no arrays")
            pick = key or next((n for n in ("images", "x", "X") if n in names), names[0])
            if pick not in names:
                raise KeyError(f"{path} has no array {pick!r} (it has {names})")
            found = next((n for n in ("labels", "y") if n in names), None)
            return ImageDataset(archive[pick], labels if labels is not None or found is None else archive[found],
                                name=os.path.basename(path))
    raise ValueError(f"{path}: expected a .npy or .npz file or an image folder")


def _image_folder(path: str) -> ImageDataset:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading an image folder needs Pillow: pip install pillow") from None
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    entries = [(os.path.join(path, c, f), k) for k, c in enumerate(classes)
               for f in sorted(os.listdir(os.path.join(path, c)))] if classes else \
        [(os.path.join(path, f), -1) for f in sorted(os.listdir(path))]
    entries = [(p, k) for p, k in entries if p.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".gif"))]
    if not entries:
        raise ValueError(f"no images (.png/.jpg/.bmp/.gif) in {path}")
    arrays = []
    for file, _ in entries:
        with Image.open(file) as img:
            a = np.asarray(img, dtype=np.float32) / 255.0
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images in {path} differ in shape: {sorted(shapes)[:4]}; resize them first")
    labels = np.array([k for _, k in entries]) if classes else None
    return ImageDataset(np.stack(arrays), labels, name=os.path.basename(os.path.normpath(path)))
