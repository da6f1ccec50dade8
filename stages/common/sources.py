"""Read CIFAR-10 from any supported source into uint8 arrays.

Sources (``data.source``):
- ``torchvision``: the official download (needs the internet);
- the official ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/``;
- an image-folder tree ``train/<class>/*``, ``test/<class>/*`` or a ``.tar``/``.tar.gz`` of one.
"""

from __future__ import annotations

import io
import logging
import pickle
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from stages.common.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SHAPE = (32, 32, 3)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
OFFICIAL_DIR = "cifar-10-batches-py"
OFFICIAL_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
OFFICIAL_TEST_BATCH = "test_batch"


@dataclass
class Split:
    images: np.ndarray  # (N, 32, 32, 3) uint8
    labels: np.ndarray  # (N,) int64


@dataclass
class RawDataset:
    """The official train and test splits as read from a source."""

    classes: list[str]
    train: Split
    test: Split
    source_kind: str
    skipped: list[dict[str, str]] = field(default_factory=list)


def read_source(source: str, download_dir: Path, on_bad_image: str) -> RawDataset:
    """Dispatch on the form of ``source``; raises DataError naming the path on failure."""
    if source == "torchvision":
        return _read_torchvision(download_dir)
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"data.source: '{source}' does not exist (use 'torchvision', an official "
            "cifar-10-python archive or folder, or an image-folder tree/tar)"
        )
    if path.is_dir():
        if (path / OFFICIAL_DIR).is_dir():
            path = path / OFFICIAL_DIR
        if (path / OFFICIAL_TEST_BATCH).is_file():
            return _read_official(lambda name: (path / name).read_bytes(), str(path))
        if (path / "train").is_dir():
            return _read_image_folder(_folder_files(path), str(path), on_bad_image)
        raise DataError(
            f"data.source: folder '{source}' holds neither {OFFICIAL_DIR}/ batches nor "
            "train/<class>/ and test/<class>/ image folders"
        )
    if tarfile.is_tarfile(path):
        return _read_tar(path, on_bad_image)
    raise DataError(
        f"data.source: '{source}' is not a folder or a readable .tar/.tar.gz archive "
        "(truncated or of another format?)"
    )


def _read_torchvision(download_dir: Path) -> RawDataset:
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(download_dir), train=True, download=True)
        test = CIFAR10(str(download_dir), train=False, download=True)
    except Exception as error:  # network errors come in many types
        raise DataError(
            f"data.source: the torchvision download of CIFAR-10 failed ({error}); offline, "
            "point data.source at a local archive or image folder"
        ) from None
    return RawDataset(
        classes=list(train.classes),
        train=Split(np.asarray(train.data, np.uint8), np.asarray(train.targets, np.int64)),
        test=Split(np.asarray(test.data, np.uint8), np.asarray(test.targets, np.int64)),
        source_kind="torchvision",
    )


def _unpickle(blob: bytes, name: str) -> dict:
    try:
        return pickle.loads(blob, encoding="bytes")
    except Exception as error:
        raise DataError(f"data.source: {name} is not a readable CIFAR batch ({error})") from None


def _read_official(read: Callable[[str], bytes], where: str) -> RawDataset:
    """The official pickled batches; ``read(name)`` returns a batch file's bytes."""

    def batch(name: str) -> Split:
        try:
            content = _unpickle(read(name), f"{where}/{name}")
        except (KeyError, FileNotFoundError):
            raise DataError(f"data.source: {where} has no batch '{name}'") from None
        data = np.asarray(content[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        return Split(data.transpose(0, 2, 3, 1).copy(), np.asarray(content[b"labels"], np.int64))

    trains = [batch(name) for name in OFFICIAL_TRAIN_BATCHES]
    meta = _unpickle(read("batches.meta"), f"{where}/batches.meta")
    return RawDataset(
        classes=[name.decode() for name in meta[b"label_names"]],
        train=Split(
            np.concatenate([s.images for s in trains]), np.concatenate([s.labels for s in trains])
        ),
        test=batch(OFFICIAL_TEST_BATCH),
        source_kind="official-archive",
    )


def _folder_files(root: Path) -> Iterator[tuple[PurePosixPath, bytes | None]]:
    """(relative path, bytes) for every file; directories as (path, None)."""
    for path in sorted(root.rglob("*")):
        relative = PurePosixPath(path.relative_to(root).as_posix())
        yield relative, (None if path.is_dir() else path.read_bytes())


def _tar_files(archive: tarfile.TarFile) -> Iterator[tuple[PurePosixPath, bytes | None]]:
    for member in archive:
        name = PurePosixPath(member.name.removeprefix("./"))
        if member.isdir():
            yield name, None
        elif member.isfile():
            yield name, archive.extractfile(member).read()


def _read_tar(path: Path, on_bad_image: str) -> RawDataset:
    try:
        with tarfile.open(path) as archive:
            names = archive.getnames()
            official = next((n for n in names if n.endswith(f"{OFFICIAL_DIR}/test_batch")), None)
            if official:
                prefix = official.removesuffix(OFFICIAL_TEST_BATCH)
                return _read_official(
                    lambda name: archive.extractfile(prefix + name).read(), str(path)
                )
            return _read_image_folder(_tar_files(archive), str(path), on_bad_image)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(
            f"data.source: archive '{path}' is truncated or corrupt ({error})"
        ) from None


def _decode(blob: bytes, name: str) -> tuple[np.ndarray | None, str]:
    """The image as (32, 32, 3) uint8, or None and the reason it cannot be used."""
    try:
        with Image.open(io.BytesIO(blob)) as image:
            image.load()
            if image.mode != "RGB":
                return None, f"mode {image.mode}, expected RGB"
            if image.size != IMAGE_SHAPE[:2]:
                return None, f"size {image.size[0]}x{image.size[1]}, expected 32x32"
            return np.asarray(image, np.uint8), ""
    except UnidentifiedImageError:
        return None, "does not decode (not a recognised image format)"
    except (OSError, SyntaxError, ValueError) as error:
        return None, f"does not decode ({error})"


def _read_image_folder(
    files: Iterator[tuple[PurePosixPath, bytes | None]], where: str, on_bad_image: str
) -> RawDataset:
    """``train/<class>/*`` and ``test/<class>/*``, possibly below one top folder."""
    folders: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}
    skipped: list[dict[str, str]] = []
    for name, blob in files:
        parts = name.parts
        split_at = next((i for i, part in enumerate(parts) if part in folders), None)
        if split_at is None or len(parts) - split_at < 2:
            continue
        split, class_name = parts[split_at], parts[split_at + 1]
        images = folders[split].setdefault(class_name, [])
        if blob is None or len(parts) - split_at != 3:
            continue
        if name.suffix.lower() not in IMAGE_SUFFIXES:
            log.warning("%s/%s: not an image file, ignored", where, name)
            continue
        images.append((str(name), blob))

    classes = sorted(folders["train"])
    if not classes:
        raise DataError(f"data.source: {where} has no train/<class>/ folders")
    for split in ("train", "test"):
        for class_name in classes:
            if class_name not in folders[split]:
                raise DataError(
                    f"data.source: {where} has no {split}/{class_name}/ folder "
                    f"(class '{class_name}' is missing from {split})"
                )
            if not folders[split][class_name]:
                raise DataError(f"data.source: {where}: {split}/{class_name}/ is an empty class")
        extra = sorted(set(folders[split]) - set(classes))
        if extra:
            raise DataError(
                f"data.source: {where}: {split}/ has class folders not in train/: {extra}"
            )

    splits = {}
    for split in ("train", "test"):
        images, labels = [], []
        for label, class_name in enumerate(classes):
            for name, blob in folders[split][class_name]:
                image, problem = _decode(blob, name)
                if image is None:
                    if on_bad_image == "fail":
                        raise DataError(
                            f"data.source: {where}/{name}: {problem} "
                            "(fatal: data.on_bad_image is 'fail')"
                        )
                    log.warning("%s/%s: %s; skipped", where, name, problem)
                    skipped.append({"file": name, "problem": problem})
                    continue
                images.append(image)
                labels.append(label)
        if not images:
            raise DataError(f"data.source: {where}: no usable images in {split}/")
        splits[split] = Split(np.stack(images), np.asarray(labels, np.int64))
    return RawDataset(classes, splits["train"], splits["test"], "image-folder", skipped)
