"""CIFAR-10-C's corruptions (stages/common/evaluation/corruptions.py) as their definitions say,
seeded and deterministic, and robustness as a metric (stages/common/evaluation/robustness.py) on a
trained model."""

from __future__ import annotations

import io
from typing import get_args

import numpy as np
import pytest
import torch
from matplotlib.colors import rgb_to_hsv
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from stages.common.config.evaluation import CorruptionName
from stages.common.data.prepared import load_prepared
from stages.common.evaluation import corruptions as c
from stages.common.evaluation.robustness import (
    Robustness,
    chosen_test_images,
    corrupted_cells,
    evaluate_robustness,
    generation_workers,
)
from stages.common.models.inference import load_model
from stages.common.plumbing.output_paths import PREPARED_FILE, paths
from tests import synthetic
from tests.conftest import shipped

GREY = np.full((64, 32, 32, 3), 128, np.uint8)  # mid-grey: noise is never clipped


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    return c.corrupt(images, name, severity, seed, np.arange(len(images)))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return synthetic.make_images(3, seed=1)[0]  # 30 images, every class


def test_params_accept_exactly_the_corruptions_the_module_defines():
    assert get_args(CorruptionName) == c.NAMES
    assert len(c.NAMES) == 15 and all(len(spec.parameters) == 5 for spec in c.CORRUPTIONS.values())
    families = {spec.family for spec in c.CORRUPTIONS.values()}
    assert families == {"noise", "blur", "weather", "digital"}


@pytest.mark.parametrize("severity", c.SEVERITIES)
def test_gaussian_noise_has_the_standard_deviation_of_its_severity(severity):
    residual = corrupt(GREY, "gaussian_noise", severity) / 255.0 - 128 / 255.0
    expected = c.CORRUPTIONS["gaussian_noise"].parameters[severity - 1]
    # storing as uint8 truncates: a uniform error of 1/255 adds its variance 1/12 / 255^2
    measured = np.sqrt(residual.var() - 1 / 12 / 255**2)
    assert measured == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("severity", c.SEVERITIES)
def test_shot_noise_is_poisson_with_the_photons_of_its_severity(severity):
    photons = c.CORRUPTIONS["shot_noise"].parameters[severity - 1]
    values = corrupt(GREY, "shot_noise", severity) / 255.0
    intensity = 128 / 255.0
    # Poisson counts: variance = mean, so the intensity's variance is intensity / photons
    assert values.var() == pytest.approx(intensity / photons, rel=0.05)


@pytest.mark.parametrize("severity", c.SEVERITIES)
def test_impulse_noise_sets_its_share_of_values_to_black_or_white(severity):
    amount = c.CORRUPTIONS["impulse_noise"].parameters[severity - 1]
    noisy = corrupt(GREY, "impulse_noise", severity)
    changed = noisy != 128
    assert changed.mean() == pytest.approx(amount, rel=0.1)
    assert set(np.unique(noisy[changed])) == {0, 255}
    assert (noisy[changed] == 255).mean() == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("severity", c.SEVERITIES)
def test_contrast_scales_each_channel_about_its_mean(images, severity):
    factor = c.CORRUPTIONS["contrast"].parameters[severity - 1]
    low = corrupt(images, "contrast", severity).astype(float)
    spread = low.std(axis=(1, 2)) / images.astype(float).std(axis=(1, 2))
    np.testing.assert_allclose(spread, factor, rtol=0.03, atol=0.01)
    np.testing.assert_allclose(low.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1.0)


@pytest.mark.parametrize("severity", c.SEVERITIES)
def test_brightness_raises_the_hsv_value_by_its_severity(images, severity):
    shift = c.CORRUPTIONS["brightness"].parameters[severity - 1]
    before = rgb_to_hsv(images / 255.0)
    after = rgb_to_hsv(corrupt(images, "brightness", severity) / 255.0)
    room = before[..., 2] < 1 - shift - 2 / 255  # not clipped at white
    np.testing.assert_allclose(after[..., 2][room], before[..., 2][room] + shift, atol=2 / 255)


@pytest.mark.parametrize("severity", c.SEVERITIES)
def test_jpeg_compression_is_a_jpeg_of_its_quality(images, severity):
    quality = c.CORRUPTIONS["jpeg_compression"].parameters[severity - 1]
    compressed = corrupt(images, "jpeg_compression", severity)
    for image, result in zip(images[:5], compressed):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=quality)
        assert np.array_equal(result, np.asarray(Image.open(buffer)))


@pytest.mark.parametrize("name", ["pixelate", "jpeg_compression", "defocus_blur", "zoom_blur"])
def test_a_more_severe_corruption_moves_images_further(images, name):
    distance = [
        np.abs(corrupt(images, name, s).astype(float) - images).mean() for s in c.SEVERITIES
    ]
    assert distance == sorted(distance) and distance[0] < distance[-1]


@pytest.mark.parametrize(
    "name", ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "pixelate", "contrast"]
)
def test_filters_leave_a_flat_image_flat(name):
    flat = corrupt(GREY[:4], name, 5).astype(int)
    assert np.all(flat.min(axis=(1, 2, 3)) == flat.max(axis=(1, 2, 3)))
    assert np.all(np.abs(flat - 128) <= 1)  # stored by truncation, as CIFAR-10-C: 127.99.. -> 127


@pytest.mark.parametrize("name", c.NAMES)
def test_every_corruption_is_seeded_per_image(images, name):
    """The same bytes again, and for any split of the images into batches or workers (each
    image's randomness comes from its own index); another seed, other noise."""
    whole = corrupt(images, name, 3)
    assert whole.dtype == np.uint8 and whole.shape == images.shape
    assert np.array_equal(corrupt(images, name, 3), whole)
    indices = np.arange(len(images))
    parts = [c.corrupt(images[i], name, 3, 0, indices[i]) for i in (slice(0, 7), slice(7, None))]
    assert np.array_equal(np.concatenate(parts), whole)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert np.array_equal(corrupt(images, name, 3), whole)
    finally:
        torch.set_num_threads(threads)
    if name not in (
        "defocus_blur",
        "zoom_blur",
        "brightness",
        "contrast",
        "pixelate",
        "jpeg_compression",
    ):
        assert not np.array_equal(corrupt(images, name, 3, seed=1), whole)  # random ones


def test_cells_generated_ahead_in_worker_processes_are_the_ones_generated_in_line(images):
    """evaluate corrupts the next cells in other processes while it predicts: same arrays, in
    the cells' order, whether fewer or more cells than the workers hold ahead."""
    chosen = np.arange(100, 100 + len(images))  # test-split positions seed each image
    cells = [(name, level) for name in ("shot_noise", "glass_blur", "snow") for level in (1, 4)]
    in_line = list(corrupted_cells(images, cells, 5, chosen, workers=0))
    assert len(in_line) == len(cells)
    assert np.array_equal(in_line[0], c.corrupt(images, "shot_noise", 1, 5, chosen))
    ahead = list(corrupted_cells(images, cells, 5, chosen, workers=2))  # 4 ahead of 6
    assert all(np.array_equal(a, b) for a, b in zip(ahead, in_line, strict=True))


def test_cells_are_generated_ahead_for_a_gpu_only(monkeypatch):
    """A GPU's prediction leaves the cores free (one kept to feed it); a CPU's uses them."""
    from stages.common.evaluation import robustness

    monkeypatch.setattr(robustness, "available_cpus", lambda: 16)
    assert generation_workers(torch.device("cuda")) == 8
    assert generation_workers(torch.device("cpu")) == 0
    monkeypatch.setattr(robustness, "available_cpus", lambda: 1)
    assert generation_workers(torch.device("cuda")) == 0


def test_the_test_subset_is_seeded_and_sorted():
    labels = np.arange(500) % 10
    first = chosen_test_images(labels, 100, seed=42)
    assert np.array_equal(first, chosen_test_images(labels, 100, seed=42))
    assert len(set(first)) == 100 and np.all(np.diff(first) > 0)
    assert not np.array_equal(first, chosen_test_images(labels, 100, seed=7))
    assert np.array_equal(chosen_test_images(labels, None, 42), np.arange(500))
    assert np.array_equal(chosen_test_images(labels, 900, 42), np.arange(500))


def spectrum_features(images: np.ndarray) -> np.ndarray:
    """Phase-free features of the generated stripes: the grey image's Fourier magnitudes and
    the mean colour."""
    x = images / 255.0
    grey = x.mean(-1)
    spectrum = np.abs(np.fft.rfft2(grey - grey.mean((1, 2), keepdims=True)))
    return np.c_[spectrum.reshape(len(x), -1), x.mean((1, 2))]


def test_more_severe_corruptions_lower_a_clean_model_s_accuracy():
    """A classifier that has learned the generated data (99% on clean test images) loses
    accuracy as the severity grows: on average over the corruptions at every step, and from
    severity 1 to 5 for each corruption."""
    train, train_labels = synthetic.make_images(40, seed=1)
    test, labels = synthetic.make_images(20, seed=2)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(spectrum_features(train), train_labels)

    def accuracy(images: np.ndarray) -> float:
        return float((model.predict(spectrum_features(images)) == labels).mean())

    clean = accuracy(test)
    table = {name: [accuracy(corrupt(test, name, s)) for s in c.SEVERITIES] for name in c.NAMES}
    by_severity = np.mean(list(table.values()), axis=0)
    assert clean > 0.95
    assert clean > by_severity[0] and np.all(np.diff(by_severity) < 0), by_severity
    for name, row in table.items():
        assert row[-1] <= row[0], (name, row)  # severity 1 may beat clean: blur denoises


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def score_trained_resnet() -> Robustness:
    """The tiny trained ResNet (in the current folder) under three corruptions at severities 1
    and 5, on 50 of the test images."""
    settings = shipped().evaluate.model_copy(deep=True)
    settings.robustness.corruptions = ["gaussian_noise", "fog", "pixelate"]
    settings.robustness.severities = [1, 5]
    settings.robustness.images = 50
    loaded = load_model(paths("resnet").checkpoint)
    return evaluate_robustness(loaded, load_prepared(PREPARED_FILE).test, settings, 42, "resnet")


@pytest.fixture(scope="module")
def robustness(trained_template, monkeypatch_module):
    monkeypatch_module.chdir(trained_template)
    return score_trained_resnet()


def test_corruptions_generated_ahead_as_on_a_gpu_score_the_same(robustness, monkeypatch):
    """The worker processes a GPU's evaluate uses (forced here): the same table, in order."""
    from stages.common.evaluation import robustness as module

    monkeypatch.setattr(module, "generation_workers", lambda device: 2)
    ahead = score_trained_resnet()
    assert ahead.accuracy == robustness.accuracy
    assert ahead.clean_accuracy == robustness.clean_accuracy


def test_robustness_scores_the_model_on_every_cell(robustness):
    assert robustness.images == 50
    assert list(robustness.accuracy) == ["gaussian_noise", "fog", "pixelate"]
    assert all(list(row) == [1, 5] for row in robustness.accuracy.values())
    cells = [a for row in robustness.accuracy.values() for a in row.values()]
    assert all(a in np.arange(51) / 50 for a in cells)  # a share of the 50 images
    assert robustness.mca == pytest.approx(np.mean(cells))
    expected_drop = (robustness.clean_accuracy - robustness.mca) / robustness.clean_accuracy
    assert robustness.mca_drop == pytest.approx(expected_drop)
    details = robustness.details()
    assert details["by_family"].keys() == {"noise", "weather", "digital"}
    assert details["accuracy"]["fog"]["5"] == robustness.accuracy["fog"][5]
