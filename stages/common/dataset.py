"""The canonical prepared data set every stage after ``prepare`` reads."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.common.errors import DataError, first_line
from stages.common.io import NPZ_ERRORS, write_atomic
from stages.common.layout import PREPARED_FILE

if TYPE_CHECKING:
    from stages.common.sources import RawDataset

log = logging.getLogger(__name__)
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


def take_subset(split: Split, per_class: int, rng: np.random.Generator) -> Split:
    """At most ``per_class`` images of each class, chosen by ``rng``, in original order."""
    keep = []
    for label in np.unique(split.labels):
        members = np.flatnonzero(split.labels == label)
        if len(members) > per_class:
            members = rng.choice(members, per_class, replace=False)
        keep.append(members)
    index = np.sort(np.concatenate(keep))
    return Split(split.images[index], split.labels[index])


def subset_shortfall(raw: RawDataset, per_class: int) -> list[str]:
    """Where ``data.subset`` asks for more images of a class than the source has."""
    notes = []
    for name, split in (("train", raw.train), ("test", raw.test)):
        counts = np.bincount(split.labels, minlength=len(raw.classes))
        short = [raw.classes[i] for i in np.flatnonzero(counts < per_class)]
        if short:
            notes.append(
                f"data.subset={per_class} is more than {name} has of {len(short)} class(es) "
                f"(smallest: {counts.min()} images); those keep all they have"
            )
    return notes


def split_train_val(train: Split, val_ratio: float, seed: int) -> tuple[Split, Split]:
    """A deterministic split, stratified by class."""
    # imported here: only prepare splits, and scikit-learn's import costs the other stages
    # seconds each
    from sklearn.model_selection import train_test_split

    counts = np.bincount(train.labels)
    smallest = int(counts[counts > 0].min())
    if round(smallest * val_ratio) < 1 or smallest - round(smallest * val_ratio) < 1:
        raise DataError(
            f"data.subset/data.val_ratio: {smallest} training image(s) of the smallest class "
            f"cannot be split into train and validation at val_ratio={val_ratio} "
            f"(raise data.subset to at least {int(np.ceil(1 / min(val_ratio, 1 - val_ratio)))})"
        )
    index = np.arange(len(train.labels))
    try:
        train_index, val_index = train_test_split(
            index, test_size=val_ratio, random_state=seed, stratify=train.labels
        )
    except ValueError as error:
        raise DataError(
            f"data.val_ratio: cannot split {len(index)} training images stratified "
            f"({first_line(error)})"
        ) from None
    train_index, val_index = np.sort(train_index), np.sort(val_index)
    return (
        Split(train.images[train_index], train.labels[train_index]),
        Split(train.images[val_index], train.labels[val_index]),
    )


def build_prepared(
    raw: RawDataset, val_ratio: float, seed: int, subset: int | None
) -> PreparedData:
    rng = np.random.default_rng(seed)
    train, test = raw.train, raw.test
    if subset is not None:
        train, test = take_subset(train, subset, rng), take_subset(test, subset, rng)
    train, val = split_train_val(train, val_ratio, seed)
    return PreparedData(raw.classes, train, val, test)


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
