"""The split, the subset and the prepared file."""

from __future__ import annotations

import numpy as np
import pytest

from stages.common.dataset import Split, build_prepared, load_prepared, save_prepared
from stages.common.errors import DataError
from stages.common.sources import RawDataset
from tests import synthetic


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


def test_val_split_too_small_to_stratify(raw):
    with pytest.raises(DataError, match=r"data.subset/data.val_ratio: 10 training image\(s\) of "):
        build_prepared(raw, val_ratio=0.01, seed=0, subset=10)
    with pytest.raises(DataError, match=r"1 training image\(s\) .*raise data.subset to at least"):
        build_prepared(raw, val_ratio=0.1, seed=0, subset=1)


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
