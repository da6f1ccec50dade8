"""Every validate check, each shown on data that violates it."""

from __future__ import annotations

import numpy as np
import pytest

from stages.common.config.data import ValidateParams
from stages.common.data.checks import (
    REFERENCE_MEAN,
    REFERENCE_STD,
    channel_stats,
    sampling_margin,
    validate,
)
from stages.common.data.prepared import PreparedData, Split
from stages.common.data.sources import RawDataset
from stages.common.data.splitting import build_prepared
from tests import synthetic
from tests.conftest import shipped


@pytest.fixture
def data() -> PreparedData:
    raw = RawDataset(
        synthetic.CLASSES,
        Split(*synthetic.make_images(20, 0)),
        Split(*synthetic.make_images(10, 1)),
        "test",
    )
    return build_prepared(raw, 0.25, 0, None)


# the synthetic images are not CIFAR-like, so drift is expected there
PARAMS = shipped(validate={"drift_tolerance": 1.0}).validate_


def check(data: PreparedData, manifest: dict | None = None, params: ValidateParams = PARAMS):
    return validate(data, manifest or {}, params)


def test_clean_data_passes(data):
    report = check(data)
    assert report.hard == [] and report.warnings == []
    assert report.numbers["test_in_train"] == 0


def test_wrong_shape_is_fatal(data):
    data.val.images = data.val.images[:, :30]
    assert check(data).hard == ["val: images have shape (50, 30, 32, 3), expected (N, 32, 32, 3)"]


def test_wrong_dtype_is_fatal(data):
    data.train.images = data.train.images.astype(np.float32)
    assert check(data).hard == ["train: images are float32, expected uint8"]


def test_labels_out_of_range_are_fatal_and_named(data):
    data.test.labels[[3, 7]] = [10, -1]
    assert check(data).hard == ["test: labels out of range [0, 9] at test[3]=10, test[7]=-1"]


def test_missing_class_is_fatal(data):
    keep = data.test.labels != 4
    data.test.images, data.test.labels = data.test.images[keep], data.test.labels[keep]
    assert check(data).hard == ["test: no images of class deer"]


def test_imbalance_is_a_warning(data):
    keep = (data.train.labels != 2) | (np.arange(len(data.train.labels)) % 3 == 0)
    data.train.images, data.train.labels = data.train.images[keep], data.train.labels[keep]
    report = check(data)
    assert report.hard == []
    assert any(w.startswith("train: class imbalance 3.00") for w in report.warnings)


def test_duplicates_within_a_split(data):
    data.train.images[5] = data.train.images[1]
    report = check(data)
    assert "train: 1 exact duplicate images: train[5]=train[1]" in report.warnings
    assert report.numbers["train_duplicates"] == 1


def test_train_test_leakage_above_threshold_is_fatal(data):
    data.test.images[[0, 9]] = data.train.images[[4, 2]]
    report = check(data)  # 2 of 100 test images = 2% > 1%
    assert len(report.hard) == 1
    assert report.hard[0].startswith("leakage 2.00% > validate.max_leakage=1.00%")
    assert "test[0]=train[4]" in report.hard[0] and "test[9]=train[2]" in report.hard[0]
    lenient = check(data, params=PARAMS.model_copy(update={"max_leakage": 0.05}))
    assert lenient.hard == [] and "2 test images also in train" in lenient.warnings[0]


def test_val_overlap_with_train_is_a_warning(data):
    data.val.images[0] = data.train.images[0]
    report = check(data)
    assert report.hard == [] and report.warnings == ["1 val images also in train: val[0]=train[0]"]


def test_blank_images_are_warnings(data):
    data.test.images[6] = 17
    report = check(data)
    assert report.warnings == ["test: 1 blank or constant images (pixel std < 2.0): test[6]"]


def test_drift_against_reference_statistics(data):
    data.train.images //= 3  # a much darker training split
    report = validate(data, {}, PARAMS.model_copy(update={"drift_tolerance": 0.05}))
    assert [w.split(" drift")[0] for w in report.warnings] == ["train: channel statistics"]
    cifar_like = np.broadcast_to(
        (np.asarray(REFERENCE_MEAN) * 255).astype(np.uint8), (4, 32, 32, 3)
    )
    mean, std = channel_stats(cifar_like)
    np.testing.assert_allclose(mean, REFERENCE_MEAN, atol=1 / 255)
    np.testing.assert_allclose(std, 0, atol=1e-6)


def cifar_like(count: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    """Images whose brightness varies from image to image as photos' does (per-image channel
    means spread 0.12 around CIFAR-10's), shifted by ``shift`` on a 0..1 scale."""
    rng = np.random.default_rng(seed)
    means = np.asarray(REFERENCE_MEAN) + shift + rng.normal(0, 0.12, (count, 1, 1, 3))
    pixels = means + rng.normal(0, 0.2, (count, 32, 32, 3))
    return (np.clip(pixels, 0, 1) * 255).round().astype(np.uint8)


def drift_warnings(images: np.ndarray, tolerance: float) -> list[str]:
    labels = np.arange(len(images)) % 10
    split = Split(images, labels)
    prepared = PreparedData(synthetic.CLASSES, split, split, split)
    params = PARAMS.model_copy(update={"drift_tolerance": tolerance})
    return [w for w in validate(prepared, {}, params).warnings if w.startswith("train:")]


def test_a_small_sample_strays_by_chance_without_a_drift_warning():
    few = cifar_like(20)
    mean, std = channel_stats(few)
    chance = max(np.abs(mean - REFERENCE_MEAN).max(), np.abs(std - REFERENCE_STD).max())
    assert chance > 0.02  # over the tolerance below: without the sampling margin, a warning
    assert sampling_margin(few) > chance
    assert drift_warnings(few, tolerance=0.02) == []


def test_a_real_shift_in_many_images_is_still_a_warning():
    shifted = cifar_like(5000, shift=0.06)
    assert sampling_margin(shifted) < 0.02
    [warning] = drift_warnings(shifted, tolerance=0.02)
    assert "that 5000 images may stray by chance" in warning


def test_skipped_images_from_prepare_are_reported(data):
    manifest = {"skipped": [{"file": "train/cat/1.png", "problem": "mode L, expected RGB"}]}
    report = check(data, manifest)
    assert report.warnings == [
        "prepare skipped 1 unusable images: train/cat/1.png (mode L, expected RGB)"
    ]


def test_long_listings_are_cut(data):
    data.test.images[:30] = 0
    report = check(data, params=PARAMS.model_copy(update={"max_listed": 3}))
    blank = [w for w in report.warnings if w.startswith("test: 30 blank")]
    assert blank[0].endswith("test[0], test[1], test[2] and 27 more")
