"""Read CIFAR-10 from any supported source into uint8 arrays.

Sources (``data.source``, a path DVC hashes as prepare's dependency):
- the official ``cifar-10-python.tar.gz`` (what the download stage fetches) or its extracted
  ``cifar-10-batches-py/``;
- an image-folder tree ``train/<class>/**``, ``test/<class>/**`` (images in nested folders
  belong to their class folder) or a ``.tar``/``.tar.gz`` of one.
"""

from __future__ import annotations

import logging
import pickle  # nosec B403: the official CIFAR-10 batches are pickles by design
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from stages.common.data.cifar10 import CLASSES
from stages.common.data.images import IMAGE_SUFFIXES, decode_image
from stages.common.data.prepared import Split
from stages.common.plumbing.errors import DataError

log = logging.getLogger(__name__)

OFFICIAL_DIR = "cifar-10-batches-py"
OFFICIAL_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
OFFICIAL_TEST_BATCH = "test_batch"
SOURCE_SPLITS = ("train", "test")
_END_OF_ARCHIVE = 1024  # two zero blocks close every tar archive
# the largest file read as an image: a 32x32 PNG or JPEG takes a few KB, a raw BMP 3 KB; a
# file (or tar member) larger than this is no CIFAR-10 image, and is not read into memory
MAX_IMAGE_BYTES = 1 << 20


@dataclass
class RawDataset:
    """The official train and test splits as read from a source."""

    classes: list[str]
    train: Split
    test: Split
    source_kind: str
    skipped: list[dict[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # files that are not images


def read_source(source: str, on_bad_image: str, class_set: str) -> RawDataset:
    """Read ``source``; DataError naming the path on failure. ``class_set`` 'cifar10' requires
    exactly CIFAR-10's ten classes."""
    raw = _read(source, on_bad_image)
    if class_set == "cifar10" and raw.classes != list(CLASSES):
        missing = sorted(set(CLASSES) - set(raw.classes))
        extra = sorted(set(raw.classes) - set(CLASSES))
        details = "; ".join(
            f"{label}: {', '.join(names)}"
            for label, names in (("missing", missing), ("not CIFAR-10 classes", extra))
            if names
        )
        raise DataError(
            f"data.source: '{source}' holds {len(raw.classes)} classes, not CIFAR-10's ten "
            f"({details or 'another order'}); set data.classes: any to use another class set"
        )
    return raw


def _read(source: str, on_bad_image: str) -> RawDataset:
    path = Path(source)
    if not path.exists():
        raise DataError(
            f"data.source: '{source}' does not exist (the official cifar-10-python archive or "
            "folder, or an image-folder tree/tar; see `downloads` in params.yaml)"
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


@dataclass(frozen=True)
class Survey:
    """What a source holds, from its names alone (nothing decoded, nothing read whole)."""

    kind: str  # "official" (CIFAR-10's batches) or "image-folder"
    train_counts: dict[str, int]  # image files per class under train/ (empty: official)


def survey_source(source: str) -> Survey:
    """What ``source`` holds; DataError, at once, for anything prepare would refuse: a path
    that is neither a regular file nor a folder (/dev/zero, a named pipe), a file that is no
    tar archive (a zip named .tar.gz, text), an archive or folder with neither the official
    batches nor train/<class>/ and test/<class>/ folders of the same classes."""
    path = Path(source)
    if path.is_dir():
        if (path / OFFICIAL_DIR).is_dir() or (path / OFFICIAL_TEST_BATCH).is_file():
            return Survey("official", {})
        files = [
            (PurePosixPath(p.relative_to(path).as_posix()), None if p.is_dir() else True)
            for p in path.rglob("*")
        ]
    elif path.is_file():
        files = _tar_names(path, source)
        if any(name.name == OFFICIAL_TEST_BATCH for name, _ in files):
            return Survey("official", {})
    else:
        raise DataError(f"data.source: '{source}' is {_what_it_is(path)}, not a file or folder")
    folders, _ = _sort_into_folders(files)
    _check_layout(folders, f"'{source}'")
    return Survey("image-folder", {name: len(found) for name, found in folders["train"].items()})


def _tar_names(path: Path, source: str) -> list[tuple[PurePosixPath, Any]]:
    """A tar archive's member names (None for a directory, True for a file)."""
    try:
        if not tarfile.is_tarfile(path):
            raise DataError(
                f"data.source: '{source}' is not a .tar/.tar.gz archive or a folder "
                f"(it looks like {_looks_like(path)})"
            )
        with tarfile.open(path) as archive:
            return [
                (PurePosixPath(m.name.removeprefix("./")), None if m.isdir() else True)
                for m in archive.getmembers()
                if m.isdir() or m.isfile()
            ]
    except (OSError, tarfile.TarError, EOFError, zlib.error) as error:
        raise DataError(
            f"data.source: archive '{source}' is truncated or corrupt ({error})"
        ) from None


def _what_it_is(path: Path) -> str:
    mode = path.stat().st_mode
    kinds = [
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _looks_like(path: Path) -> str:
    """What a file's first bytes say it is."""
    with path.open("rb") as handle:
        start = handle.read(8)
    for magic, name in (
        (b"PK\x03\x04", "a zip archive"),
        (b"\x1f\x8b", "gzip of something that is no tar"),
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8", "a JPEG image"),
        (b"BZh", "a bzip2 file"),
        (b"\xfd7zXZ", "an xz file"),
    ):
        if start.startswith(magic):
            return name
    if not start:
        return "an empty file"
    printable = all(32 <= byte < 127 or byte in b"\t\n\r" for byte in start)
    return "text" if printable else "another format"


def count_training_images(source: str) -> dict[str, int] | None:
    """Image files per class under train/ of an image-folder source (a tree or a tar), from
    the names alone, without decoding anything: what check_params needs to know the training
    set's size before prepare runs. None for the official batches (5,000 per class) and for a
    source that is not there (yet: a download makes it)."""
    if not Path(source).exists():
        return None
    survey = survey_source(source)
    return survey.train_counts or None


def _unpickle(blob: bytes, name: str) -> dict:
    """An official CIFAR batch. These are pickles by the data set's own design; they are read
    only from the source the user names (the official archive, md5-checked when downloaded)."""
    try:
        return pickle.loads(blob, encoding="bytes")  # nosec B301
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


@dataclass(frozen=True)
class Unread:
    """A file of an image folder that was not read, and why (a skipped image if it is named
    like one, an ignored file otherwise)."""

    reason: str


FileContent = bytes | Unread | None  # None: a directory


def _too_large(size: int) -> Unread | None:
    if size > MAX_IMAGE_BYTES:
        return Unread(f"{size:,} bytes, too large for a 32x32 image (not read)")
    return None


def _folder_files(root: Path) -> Iterator[tuple[PurePosixPath, FileContent]]:
    """(relative path, bytes) for every file; directories as (path, None). Neither a file too
    large to be an image nor one that is not a regular file (a named pipe would block the
    read forever) is read."""
    for path in sorted(root.rglob("*")):
        relative = PurePosixPath(path.relative_to(root).as_posix())
        if path.is_dir():
            yield relative, None
        elif not path.is_file():
            yield relative, Unread("not a regular file (not read)")
        else:
            yield relative, _too_large(path.stat().st_size) or path.read_bytes()


def _tar_files(archive: tarfile.TarFile) -> Iterator[tuple[PurePosixPath, FileContent]]:
    """As _folder_files, for the members of ``archive``: a member's declared size decides
    before anything is decompressed into memory."""
    for member in archive:
        name = PurePosixPath(member.name.removeprefix("./"))
        if member.isdir():
            yield name, None
        elif member.isfile():
            handle = archive.extractfile(member)
            yield name, _too_large(member.size) or (handle.read() if handle else b"")


def _check_complete(archive: tarfile.TarFile, path: Path) -> None:
    """A tar cut at a block boundary reads as a shorter, valid-looking archive: only the
    missing end-of-archive blocks tell. Refuse it rather than lose images quietly."""
    fileobj = archive.fileobj
    fileobj.seek(archive.offset)
    tail = fileobj.read(_END_OF_ARCHIVE)
    if len(tail) < _END_OF_ARCHIVE or tail.strip(b"\0"):
        raise DataError(
            f"data.source: archive '{path}' ends early (no end-of-archive marker after "
            f"{archive.offset} bytes of entries): it is truncated, re-copy or re-download it"
        )


def _read_tar(path: Path, on_bad_image: str) -> RawDataset:
    try:
        with tarfile.open(path) as archive:
            names = archive.getnames()
            _check_complete(archive, path)
            official = next((n for n in names if n.endswith(f"{OFFICIAL_DIR}/test_batch")), None)
            if official:
                prefix = official.removesuffix(OFFICIAL_TEST_BATCH)
                return _read_official(lambda name: _member_bytes(archive, prefix + name), str(path))
            return _read_image_folder(_tar_files(archive), str(path), on_bad_image)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise DataError(
            f"data.source: archive '{path}' is truncated or corrupt ({error})"
        ) from None


def _member_bytes(archive: tarfile.TarFile, name: str) -> bytes:
    handle = archive.extractfile(name)
    if handle is None:
        raise KeyError(name)
    return handle.read()


Folders = dict[str, dict[str, list[tuple[str, Any]]]]  # split -> class -> (file, its content)


def _sort_into_folders(files: Iterable[tuple[PurePosixPath, Any]]) -> tuple[Folders, list[str]]:
    """``train/<class>/**`` and ``test/<class>/**`` files (possibly below one top folder) by
    split and class, and the files that belong nowhere or are not images. A content of None
    marks a directory."""
    folders: Folders = {split: {} for split in SOURCE_SPLITS}
    ignored: list[str] = []
    for name, content in files:
        parts = name.parts
        split_at = next((i for i, part in enumerate(parts) if part in folders), None)
        if split_at is None or len(parts) - split_at < 2:
            if content is not None:
                ignored.append(str(name))
            continue
        split, class_name = parts[split_at], parts[split_at + 1]
        images = folders[split].setdefault(class_name, [])
        if content is None or len(parts) - split_at == 2:
            continue
        if name.suffix.lower() not in IMAGE_SUFFIXES:
            ignored.append(str(name))
            continue
        images.append((str(name), content))
    return folders, ignored


def _check_layout(folders: Folders, where: str) -> list[str]:
    """The classes, the same in train/ and test/, none empty; DataError otherwise."""
    classes = sorted(folders["train"])
    if not classes:
        raise DataError(f"data.source: {where} has no train/<class>/ folders")
    for split in SOURCE_SPLITS:
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
    return classes


def _read_image_folder(
    files: Iterator[tuple[PurePosixPath, FileContent]], where: str, on_bad_image: str
) -> RawDataset:
    """``train/<class>/**`` and ``test/<class>/**``, possibly below one top folder."""
    folders, ignored = _sort_into_folders(files)
    if ignored:
        log.warning(
            "%s: %d file(s) that are not images in train/<class>/ or test/<class>/ ignored: %s",
            where,
            len(ignored),
            ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else ""),
        )
    classes = _check_layout(folders, where)

    skipped: list[dict[str, str]] = []
    splits = {}
    for split in SOURCE_SPLITS:
        images, labels = [], []
        for label, class_name in enumerate(classes):
            for file_name, blob in folders[split][class_name]:
                image, problem = (
                    (None, blob.reason) if isinstance(blob, Unread) else decode_image(blob)
                )
                if image is None:
                    if on_bad_image == "fail":
                        raise DataError(
                            f"data.source: {where}/{file_name}: {problem} "
                            "(fatal: data.on_bad_image is 'fail')"
                        )
                    log.warning("%s/%s: %s; skipped", where, file_name, problem)
                    skipped.append({"file": file_name, "problem": problem})
                    continue
                images.append(image)
                labels.append(label)
        if not images:
            raise DataError(f"data.source: {where}: no usable images in {split}/")
        splits[split] = Split(np.stack(images), np.asarray(labels, np.int64))
    return RawDataset(
        classes, splits["train"], splits["test"], "image-folder", skipped, sorted(ignored)
    )
