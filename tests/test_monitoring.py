"""The served model's monitoring without a server: drift against a reference on real shifts
(the robustness stage's corruptions, a two-class stream) and quiet on clean traffic, the A/B
split's routing and its test, and the metrics in Prometheus' format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats

from stages.common.evaluation.corruptions import corrupt
from stages.common.monitoring.ab_test import (
    FeedbackLedger,
    FeedbackRefused,
    Router,
    Tally,
    compare_variants,
    stable_fraction,
)
from stages.common.monitoring.drift import (
    CONTINUOUS,
    DriftMonitor,
    DriftReference,
    DriftSettings,
    image_features,
    ks_two_sample,
    reference_of,
)
from stages.common.monitoring.metrics import ServiceMetrics
from stages.common.plumbing.errors import DataError
from tests import synthetic

CLASSES = synthetic.CLASSES
SETTINGS = DriftSettings(window=200, min_images=100, every=10)
SHIFT_BUDGET = 100  # images: each shift must ring within this many (measured: 40-60)


class NearestMean:
    """A fixed classifier of the synthetic classes (softmax over distances to each class's
    mean image), fitted on images of its own: a model's confidences on unseen data."""

    def __init__(self) -> None:
        images, labels = synthetic.make_images(50, seed=90)
        flat = images.reshape(len(images), -1).astype(np.float64)
        self.means = np.stack([flat[labels == c].mean(0) for c in range(len(CLASSES))])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        flat = images.reshape(len(images), -1).astype(np.float64)
        logits = -((flat[:, None, :] - self.means[None]) ** 2).mean(-1) / 50
        logits -= logits.max(1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def model() -> NearestMean:
    return NearestMean()


@pytest.fixture(scope="module")
def reference(model) -> DriftReference:
    images, _ = synthetic.make_images(100, seed=1)  # the "test split": 1,000 images
    return reference_of(images, model(images), CLASSES)


def clean_stream(count: int, seed: int) -> np.ndarray:
    """Unseen images of the reference's distribution, in random class order."""
    images, _ = synthetic.make_images(-(-count // len(CLASSES)), seed=seed)
    return images[np.random.default_rng(seed).permutation(len(images))][:count]


def feed(monitor: DriftMonitor, model, images: np.ndarray, stop_on_alarm: bool = False) -> int:
    """One image per request, as clients send them; the images sent until the first alarm
    (or all of them)."""
    for sent in range(1, len(images) + 1):
        batch = images[sent - 1 : sent]
        monitor.observe(batch, model(batch))
        if stop_on_alarm and monitor.verdict == "drift":
            return sent
    return len(images)


def test_features_of_known_images():
    grey = np.full((1, 32, 32, 3), 128, np.uint8)
    halves = np.zeros((1, 32, 32, 3), np.uint8)
    halves[:, :16] = 255
    features = image_features(np.concatenate([grey, halves]))
    assert features[0] == pytest.approx([128 / 255] * 3 + [0] * 3 + [128 / 255, 0])
    assert features[1] == pytest.approx([0.5] * 3 + [0.5] * 3 + [0.5, 0.5])


def test_clean_traffic_rings_no_alarm_over_many_windows(reference, model):
    """False alarms on 3,000 unseen clean images: 15 full windows, ~290 tests of the window."""
    monitor = DriftMonitor(reference, SETTINGS)
    feed(monitor, model, clean_stream(3000, seed=2))
    assert monitor.checks >= 280
    assert monitor.alarms == 0, monitor.results
    assert monitor.verdict == "no drift"


@pytest.mark.parametrize("severity", [3, 5])
@pytest.mark.parametrize("corruption", ["fog", "gaussian_noise", "contrast"])
def test_each_corruption_rings_within_the_budget(reference, model, corruption, severity):
    monitor = DriftMonitor(reference, SETTINGS)
    feed(monitor, model, clean_stream(300, seed=3))  # a full window of clean traffic first
    assert monitor.verdict == "no drift"
    clean = clean_stream(SHIFT_BUDGET, seed=4)
    shifted = corrupt(clean, corruption, severity, seed=0, indices=range(len(clean)))
    sent = feed(monitor, model, shifted, stop_on_alarm=True)
    assert monitor.verdict == "drift", monitor.results
    assert sent <= SHIFT_BUDGET


def test_a_stream_of_two_classes_rings_and_the_predicted_classes_say_so(reference, model):
    monitor = DriftMonitor(reference, SETTINGS)
    feed(monitor, model, clean_stream(300, seed=5))
    images, labels = synthetic.make_images(60, seed=6)
    two = images[np.isin(labels, [3, 5])]
    two = two[np.random.default_rng(6).permutation(len(two))][:SHIFT_BUDGET]
    sent = feed(monitor, model, two, stop_on_alarm=True)
    assert sent < SHIFT_BUDGET  # the classes' colours may ring first
    feed(monitor, model, two[sent:])
    assert monitor.results["predicted_class"]["drift"], monitor.results


def test_the_window_forgets_a_shift_once_clean_traffic_fills_it(reference, model):
    monitor = DriftMonitor(reference, SETTINGS)
    shifted = corrupt(clean_stream(150, seed=7), "fog", 5, seed=0, indices=range(150))
    feed(monitor, model, shifted)
    assert monitor.verdict == "drift"
    feed(monitor, model, clean_stream(SETTINGS.window, seed=8))
    assert monitor.verdict == "no drift"
    assert monitor.alarms > 0 and monitor.first_alarm_at == SETTINGS.min_images


def test_no_verdict_before_the_window_holds_its_minimum(reference, model):
    monitor = DriftMonitor(reference, SETTINGS)
    feed(monitor, model, clean_stream(SETTINGS.min_images - 1, seed=9))
    report = monitor.report()
    assert report["verdict"] == "collecting" and report["features"] == {}
    assert report["window"] == {"images": SETTINGS.min_images - 1, "size": SETTINGS.window}


def test_the_reference_is_checked_when_read(reference, tmp_path):
    stored = reference.model_dump()
    assert set(stored["features"]) == set(CONTINUOUS)
    stored["features"]["contrast"] = stored["features"]["contrast"][:-1]
    damaged = tmp_path / "drift_reference.json"
    damaged.write_text(json.dumps(stored))
    with pytest.raises(DataError, match=r"drift_reference.json: .*contrast: 999 values for 1000"):
        DriftReference.load(damaged)


def test_a_client_meets_the_same_variant_everywhere_and_the_split_holds():
    router = Router(("A", "B"), first_share=0.9)
    again = Router(("A", "B"), first_share=0.9)  # another process: the same answers
    clients = [f"client-{i}" for i in range(10_000)]
    chosen = [router.choose(client) for client in clients]
    assert chosen == [again.choose(client) for client in clients]
    assert 0.88 < chosen.count("A") / len(clients) < 0.92  # 0.9 +- 6.7 sd
    assert 0 <= stable_fraction("x") < 1


def test_clients_without_an_id_are_split_at_random():
    router = Router(("A", "B"), first_share=0.25, rng=np.random.default_rng(0))
    chosen = [router.choose(None) for _ in range(10_000)]
    assert 0.23 < chosen.count("A") / len(chosen) < 0.27


def test_a_prediction_takes_one_true_label_of_a_known_class():
    ledger = FeedbackLedger(("A", "B"), ["cat", "dog"], capacity=2)
    first = ledger.issue("A", 0)
    assert ledger.record(first, "cat") == ("A", True)
    with pytest.raises(FeedbackRefused, match="unknown"):
        ledger.record(first, "cat")  # a second label
    second = ledger.issue("B", 1)
    with pytest.raises(FeedbackRefused, match="label: 'cow' is not one of"):
        ledger.record(second, "cow")
    assert ledger.record(second, "cat") == ("B", False)
    oldest = ledger.issue("A", 0)
    ledger.issue("A", 0)
    ledger.issue("A", 0)  # over capacity: the oldest is forgotten
    with pytest.raises(FeedbackRefused) as refused:
        ledger.record(oldest, "cat")
    assert refused.value.kind == "unknown"
    assert ledger.tallies["A"] == Tally(1, 1) and ledger.tallies["B"] == Tally(1, 0)


def test_the_a_b_verdict_needs_a_significant_difference():
    clear = compare_variants({"A": Tally(200, 120), "B": Tally(200, 170)})
    assert clear["verdict"] == "B is more accurate" and clear["p_value"] < 1e-6
    assert clear["difference"]["B-A"] == pytest.approx(0.25)
    low, high = clear["variants"]["A"]["interval"]
    assert low < 0.6 < high
    close = compare_variants({"A": Tally(100, 50), "B": Tally(100, 53)})
    assert close["verdict"].startswith("no significant difference") and close["p_value"] > 0.5
    waiting = compare_variants({"A": Tally(10, 5), "B": Tally()})
    assert waiting["verdict"] == "waiting for labels of both variants"


def test_metrics_parse_and_unknown_paths_share_one_label(reference, model):
    monitor = DriftMonitor(reference, SETTINGS)
    feed(monitor, model, clean_stream(SETTINGS.min_images, seed=10))
    metrics = ServiceMetrics({"/v1/predict"}, {"A": monitor})
    for path in ("/v1/predict", "/wp-admin", "/a/b/c"):
        metrics.requests.labels(metrics.route(path), "GET", "404").inc()
    metrics.predicted.labels("A", "cat").inc(3)
    families = {f.name: f for f in text_string_to_metric_families(metrics.exposition().decode())}
    routes = {s.labels["route"] for s in families["cifar10_http_requests"].samples}
    assert routes == {"/v1/predict", "other"}
    drift = {s.labels["feature"] for s in families["cifar10_drift_p_value"].samples}
    assert drift == {*CONTINUOUS, "predicted_class"}
    (detected,) = families["cifar10_drift_detected"].samples
    assert detected.labels == {"variant": "A"} and detected.value == 0.0
    (cats,) = [s for s in families["cifar10_predictions"].samples if s.name.endswith("_total")]
    assert cats.labels == {"variant": "A", "class": "cat"} and cats.value == 3


def test_the_presorted_ks_test_is_scipy_s():
    rng = np.random.default_rng(0)
    for _ in range(100):
        sample = np.round(rng.normal(rng.normal(0, 0.2), 1, rng.integers(20, 600)), 2)
        reference = np.round(rng.normal(0, 1, rng.integers(50, 12_000)), rng.integers(1, 4))
        expected = stats.ks_2samp(sample, reference, method="asymp")
        assert ks_two_sample(sample, np.sort(reference)) == (expected.statistic, expected.pvalue)
