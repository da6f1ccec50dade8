"""The canonical prepared data set every stage after ``prepare`` reads."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.common.plumbing.errors import DataError, first_line
from stages.common.plumbing.files import NPZ_ERRORS, write_atomic
from stages.common.plumbing.output_paths import PREPARED_FILE

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    images: np.ndarray  # (N, 32, 32, 3) uint8
    labels: np.ndarray  # (N,) int64


@dataclass
class PreparedData:
    classes: list[str]
    train: Split
    val: Split
    test: Split

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def content_hash(self) -> str:
        digest = hashlib.sha256()
        digest.update("\n".join(self.classes).encode())
        for name in SPLITS:
            split = self.split(name)
            digest.update(np.ascontiguousarray(split.images).tobytes())
            digest.update(np.ascontiguousarray(split.labels).tobytes())
        return digest.hexdigest()


def save_prepared(data: PreparedData, path: Path = PREPARED_FILE) -> None:
    arrays = {"classes": np.asarray(data.classes)}
    for name in SPLITS:
        split = data.split(name)
        arrays[f"{name}_images"] = split.images
        arrays[f"{name}_labels"] = split.labels

    def write(temp: Path) -> None:
        with temp.open("wb") as handle:
            np.savez(handle, **arrays)

    write_atomic(path, write)


def load_prepared(path: Path = PREPARED_FILE) -> PreparedData:
    """Read the prepared arrays; a missing or damaged file names itself and the fix."""
    if not path.is_file():
        raise DataError(f"{path}: prepared data not found (run `dvc repro prepare`)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            splits = {
                name: Split(arrays[f"{name}_images"], arrays[f"{name}_labels"].astype(np.int64))
                for name in SPLITS
            }
            classes = [str(name) for name in arrays["classes"]]
    except NPZ_ERRORS as error:
        raise DataError(
            f"{path}: damaged prepared data ({first_line(error, limit=80)}); restore it with "
            "`dvc checkout prepare` or re-create it with `dvc repro -f prepare`"
        ) from None
    return PreparedData(classes, splits["train"], splits["val"], splits["test"])
