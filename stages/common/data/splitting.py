"""What prepare does to a source's images: the per-class subset and the stratified train/val
split, and whether a split is possible at all (checked by check_params before DVC starts)."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np

from stages.common.config.data import DataParams
from stages.common.data.cifar10 import CLASSES, IMAGES_PER_CLASS
from stages.common.data.prepared import PreparedData, Split
from stages.common.data.sources import RawDataset, count_training_images
from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import write_json

LARGEST_SEARCHED = 100_000  # per-class counts searched for the smallest workable one
SOURCE_COUNTS = Path(".dvc/tmp/source-counts.json")  # DVC's scratch folder: never an output


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


def splittable(counts: np.ndarray, val_ratio: float) -> bool:
    """Whether scikit-learn's stratified split at ``val_ratio`` works for classes of ``counts``
    training images and leaves every class images on both sides: it needs at least as many
    validation and training images as classes, and the smallest class must get one of each."""
    total, classes = int(counts.sum()), len(counts)
    validation = math.ceil(val_ratio * total)
    smallest = int(counts.min())
    smallest_validation = round(smallest * val_ratio)
    return (
        validation >= classes
        and total - validation >= classes
        and 1 <= smallest_validation < smallest
    )


def smallest_workable(val_ratio: float, classes: int) -> int | None:
    """The fewest training images per class (all classes alike) that split at ``val_ratio``."""
    for per_class in range(2, LARGEST_SEARCHED):
        if splittable(np.full(classes, per_class), val_ratio):
            return per_class
    return None


def split_problem(
    counts: np.ndarray, classes: list[str], val_ratio: float, available: int | None = None
) -> str | None:
    """Why training images per class ``counts`` cannot be split at ``val_ratio`` (one line
    naming the smallest class and what would help), or None. ``available``: the images per
    class the source holds, when a larger data.subset could take more."""
    if splittable(counts, val_ratio):
        return None
    smallest = int(counts.argmin())
    have = int(counts[smallest])
    problem = (
        f"data.val_ratio={val_ratio}: class '{classes[smallest]}' has {have} training "
        f"image(s), too few for a stratified train/validation split"
    )
    needed = smallest_workable(val_ratio, len(counts))
    fixes = []
    if needed is not None and available is not None and available >= needed > have:
        fixes.append(f"data.subset >= {needed}")
    ratios = [k / have for k in range(1, have) if splittable(counts, k / have)]
    if ratios:
        fixes.append(f"data.val_ratio between {min(ratios):.3g} and {max(ratios):.3g}")
    if not fixes:
        fixes.append("more images of that class")
    return f"{problem} (needs {' or '.join(fixes)})"


def split_train_val(
    train: Split, classes: list[str], val_ratio: float, seed: int, available: int | None = None
) -> tuple[Split, Split]:
    """A deterministic split, stratified by class (``available``: see split_problem)."""
    # imported here: scikit-learn's import costs seconds
    from sklearn.model_selection import train_test_split

    counts = np.bincount(train.labels, minlength=len(classes))
    problem = split_problem(counts, classes, val_ratio, available)
    if problem:
        raise DataError(problem)
    train_index, val_index = train_test_split(
        np.arange(len(train.labels)), test_size=val_ratio, random_state=seed, stratify=train.labels
    )
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
    available = None
    if subset is not None:
        train, test = take_subset(train, subset, rng), take_subset(test, subset, rng)
        available = int(np.bincount(raw.train.labels, minlength=len(raw.classes)).min())
    train, val = split_train_val(train, raw.classes, val_ratio, seed, available)
    return PreparedData(raw.classes, train, val, test)


def counted_training_images(source: str) -> dict[str, int] | None:
    """count_training_images, remembered for an archive of the same path, size and time
    (listing a 60,000-member tar.gz takes seconds; every run.sh asks)."""
    path = Path(source)
    if not path.is_file():
        return count_training_images(source)
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        remembered = json.loads(SOURCE_COUNTS.read_text())
    except (OSError, ValueError):
        remembered = {}
    if key not in remembered:
        remembered = {key: count_training_images(source)}  # one archive at a time is enough
        with contextlib.suppress(OSError, DataError):
            write_json(SOURCE_COUNTS, remembered)
    return remembered[key]


def source_train_counts(data: DataParams) -> tuple[np.ndarray, list[str], int | None] | None:
    """(training images per class after data.subset, their classes, images per class the
    source has) that prepare will split, from the source's file names where it is an image
    folder, CIFAR-10's 5,000 per class for the official batches; None when unknown (a source
    not there yet that is not CIFAR-10's)."""
    counted = counted_training_images(data.source)
    if counted is not None:
        classes = sorted(counted)
        have = np.asarray([counted[name] for name in classes])
    elif data.classes == "cifar10":
        classes, have = list(CLASSES), np.full(len(CLASSES), IMAGES_PER_CLASS["train"])
    else:
        return None
    kept = np.minimum(have, data.subset) if data.subset else have
    return kept, classes, (int(have.min()) if data.subset else None)


def expected_split_sizes(data: DataParams) -> tuple[int, int] | None:
    """(training, validation) images these settings give (scikit-learn's rule for the split),
    from the source (above), else None. (Never from the last prepare run's manifest: it need
    not be of this source, and a run estimated from another source's counts misled.)"""
    known = source_train_counts(data)
    if known is None:
        return None
    total = int(known[0].sum())
    validation = math.ceil(data.val_ratio * total)
    return total - validation, validation
