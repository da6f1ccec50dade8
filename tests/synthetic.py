"""A generated, learnable CIFAR-format data set and writers for every supported source form.

Each class is a distinct pattern (stripes of a class-specific orientation and frequency on a
class-specific colour) plus noise, so a tiny model beats chance by a wide margin in seconds.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from stages.common.data import cifar10

CLASSES = list(cifar10.CLASSES)  # the real names, so data.classes: cifar10 accepts it


def make_images(per_class: int, seed: int, classes: int = 10, noise: float = 40.0):
    """``per_class`` images of each class: (N, 32, 32, 3) uint8 and (N,) int64 labels."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:32, 0:32]
    images, labels = [], []
    for label in range(classes):
        angle = np.pi * label / classes
        frequency = 0.25 + 0.05 * (label % 3)
        projection = frequency * (np.cos(angle) * cols + np.sin(angle) * rows)
        colour = np.array([(label * 37) % 255, (label * 91) % 255, (label * 53) % 255], float)
        for _ in range(per_class):
            phase = rng.uniform(0, 2 * np.pi)
            stripes = np.sin(projection + phase)[..., None]
            pattern = 128 + 60 * stripes + 0.4 * (colour - 128)
            image = pattern + rng.normal(0, noise, (32, 32, 3))
            images.append(np.clip(image, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64)


def png_bytes(image: np.ndarray, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def write_image_folder(
    root: Path,
    train_per_class: int = 30,
    test_per_class: int = 10,
    seed: int = 0,
    classes: int = 10,
) -> Path:
    """``root/train/<class>/NNNN.png`` and ``root/test/<class>/NNNN.png`` (lossless), for the
    first ``classes`` of CIFAR-10's classes."""
    for split, per_class, offset in (("train", train_per_class, 0), ("test", test_per_class, 1)):
        images, labels = make_images(per_class, seed + offset, classes)
        for index, (image, label) in enumerate(zip(images, labels)):
            path = root / split / CLASSES[label] / f"{index:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png_bytes(image))
    return root


def write_tar(folder: Path, archive: Path) -> Path:
    """A .tar.gz of an image-folder tree, with train/ and test/ at the top."""
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(folder / split, arcname=split)
    return archive


def write_official(root: Path, train_per_class: int = 10, test_per_class: int = 5) -> Path:
    """The official python layout: root/cifar-10-batches-py/{data_batch_1..5,test_batch,...}."""
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    images, labels = make_images(train_per_class, 0)
    order = np.random.default_rng(0).permutation(len(labels))
    parts = np.array_split(order, 5)
    for number, part in enumerate(parts, start=1):
        _write_batch(batches / f"data_batch_{number}", images[part], labels[part])
    test_images, test_labels = make_images(test_per_class, 1)
    _write_batch(batches / "test_batch", test_images, test_labels)
    meta = {b"label_names": [name.encode() for name in CLASSES]}
    (batches / "batches.meta").write_bytes(pickle.dumps(meta))
    return batches


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    path.write_bytes(pickle.dumps({b"data": data, b"labels": labels.tolist()}))


def write_official_archive(root: Path, archive: Path) -> Path:
    batches = write_official(root)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    return archive


class CommandPayload:
    """Pickled as a call to os.system: unpickling it would run ``touch marker``, so a test
    can tell whether anything unpickled a crafted file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
