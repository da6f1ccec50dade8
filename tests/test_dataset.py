"""The split, the subset and the prepared file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from stages.common.data.prepared import Split, load_prepared, save_prepared
from stages.common.data.sources import RawDataset
from stages.common.data.splitting import build_prepared, expected_split_sizes, source_train_counts
from stages.common.plumbing.errors import DataError
from tests import synthetic
from tests.conftest import shipped


@pytest.fixture
def raw() -> RawDataset:
    train = Split(*synthetic.make_images(50, 0))
    test = Split(*synthetic.make_images(20, 1))
    return RawDataset(synthetic.CLASSES, train, test, "test")


def test_split_is_stratified_and_deterministic(raw):
    first = build_prepared(raw, val_ratio=0.2, seed=3, subset=None)
    again = build_prepared(raw, val_ratio=0.2, seed=3, subset=None)
    other = build_prepared(raw, val_ratio=0.2, seed=4, subset=None)
    assert np.bincount(first.val.labels).tolist() == [10] * 10
    assert np.bincount(first.train.labels).tolist() == [40] * 10
    assert first.content_hash() == again.content_hash() != other.content_hash()
    np.testing.assert_array_equal(first.test.images, raw.test.images)


def test_train_and_val_partition_the_training_images(raw):
    data = build_prepared(raw, val_ratio=0.1, seed=0, subset=None)
    rows = {row.tobytes() for row in np.concatenate([data.train.images, data.val.images])}
    assert len(rows) == len(raw.train.labels) == len(data.train.labels) + len(data.val.labels)


def test_subset_takes_per_class_from_train_and_test(raw):
    data = build_prepared(raw, val_ratio=0.2, seed=0, subset=10)
    assert np.bincount(data.train.labels).tolist() == [8] * 10
    assert np.bincount(data.val.labels).tolist() == [2] * 10
    assert np.bincount(data.test.labels).tolist() == [10] * 10


SPLIT_CASES = [
    # the source has 50 per class: a larger subset is named only where it can help
    (
        1,
        0.1,
        "class 'airplane' has 1 training image(s), too few for a stratified train/"
        "validation split (needs data.subset >= 10)",
    ),
    (
        5,
        0.1,
        "has 5 training image(s), too few for a stratified train/validation split (needs "
        "data.subset >= 10 or data.val_ratio between 0.2 and 0.8)",
    ),
    (6, 0.1, "(needs data.subset >= 10 or data.val_ratio between 0.167 and 0.833)"),
    (
        10,
        0.01,
        "has 10 training image(s), too few for a stratified train/validation split "
        "(needs data.val_ratio between 0.1 and 0.9)",
    ),
    (
        None,
        0.001,
        "data.val_ratio=0.001: class 'airplane' has 50 training image(s), too few for "
        "a stratified train/validation split (needs data.val_ratio between 0.02 and 0.98)",
    ),
    (None, 0.99, "(needs data.val_ratio between 0.02 and 0.98)"),
]


@pytest.mark.parametrize(("subset", "ratio", "expected"), SPLIT_CASES)
def test_a_split_that_cannot_be_made_says_what_would_help(raw, subset, ratio, expected):
    with pytest.raises(DataError) as error:
        build_prepared(raw, val_ratio=ratio, seed=0, subset=subset)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_a_class_with_one_image_is_named(raw):
    labels = raw.train.labels
    keep = (labels != 3) | (np.cumsum(labels == 3) == 1)  # one 'cat' left
    lonely = RawDataset(raw.classes, Split(raw.train.images[keep], labels[keep]), raw.test, "t")
    with pytest.raises(DataError, match=r"class 'cat' has 1 training image\(s\), .*\(needs more "):
        build_prepared(lonely, val_ratio=0.1, seed=0, subset=None)


@pytest.mark.parametrize(("subset", "ratio"), [(10, 0.1), (2, 0.5), (None, 0.02), (None, 0.98)])
def test_the_smallest_workable_split_works(raw, subset, ratio):
    """The bounds the messages above name are splits scikit-learn makes."""
    data = build_prepared(raw, val_ratio=ratio, seed=0, subset=subset)
    assert np.bincount(data.val.labels, minlength=10).min() >= 1
    assert np.bincount(data.train.labels, minlength=10).min() >= 1


def test_round_trip(raw, tmp_path):
    data = build_prepared(raw, 0.1, 0, None)
    save_prepared(data, tmp_path / "d.npz")
    loaded = load_prepared(tmp_path / "d.npz")
    assert loaded.classes == data.classes and loaded.content_hash() == data.content_hash()


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: b"garbage",
        lambda blob: blob[: len(blob) // 2],  # truncated
        lambda blob: blob[:5000] + bytes([blob[5000] ^ 0xFF]) + blob[5001:],  # one bit flipped
    ],
)
def test_damaged_prepared_file(raw, tmp_path, damage):
    save_prepared(build_prepared(raw, 0.1, 0, None), tmp_path / "d.npz")
    (tmp_path / "d.npz").write_bytes(damage((tmp_path / "d.npz").read_bytes()))
    with pytest.raises(DataError, match=r"d.npz: damaged prepared data .*`dvc checkout prepare`"):
        load_prepared(tmp_path / "d.npz")


def test_missing_prepared_file(tmp_path):
    with pytest.raises(DataError, match="missing.npz: prepared data not found"):
        load_prepared(tmp_path / "missing.npz")


def test_the_training_set_size_comes_from_the_source_before_prepare(tmp_path, image_folder):
    """A copy of CIFAR-10 with fewer images than the official 5,000 per class: check_params
    must know the training set it will get, not assume the official one."""
    source = Path(shutil.copytree(image_folder, tmp_path / "few"))
    for extra in sorted((source / "train" / "cat").glob("*.png"))[10:]:
        extra.unlink()  # cat keeps 10 of its 30
    data = shipped(data={"source": str(source), "val_ratio": 0.1, "subset": None}).data
    counts, classes, available = source_train_counts(data)
    assert dict(zip(classes, counts.tolist()))["cat"] == 10 and sum(counts) == 280
    assert available is None  # no subset: nothing more to take
    assert expected_split_sizes(data) == (252, 28)
    subset = data.model_copy(update={"subset": 20})
    assert source_train_counts(subset)[0].tolist() == [20, 20, 20, 10, 20, 20, 20, 20, 20, 20]
