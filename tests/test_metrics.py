"""Metrics, calibration and temperature scaling against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from stages.common.evaluation import metrics as m
from stages.common.evaluation.comparison import best_of, soft_vote


def two_class(confidence: float, n: int) -> np.ndarray:
    return np.tile([confidence, 1 - confidence], (n, 1))


def test_perfectly_calibrated_has_zero_ece():
    probabilities = two_class(0.8, 10)
    labels = np.array([0] * 8 + [1] * 2)  # 80% correct at 80% confidence
    result = m.calibration_metrics(probabilities, labels, bins=15)
    assert result["ece"] == pytest.approx(0.0, abs=1e-12)
    assert result["mce"] == pytest.approx(0.0, abs=1e-12)


def test_badly_over_confident():
    probabilities = two_class(0.99, 4)
    labels = np.array([0, 1, 1, 0])  # 50% correct at 99% confidence
    result = m.calibration_metrics(probabilities, labels, bins=15)
    assert result["ece"] == pytest.approx(0.49)
    assert result["mce"] == pytest.approx(0.49)
    assert result["nll"] == pytest.approx(-(2 * np.log(0.99) + 2 * np.log(0.01)) / 4)
    # correct: 0.01^2 + 0.01^2; wrong: 0.99^2 + 0.99^2
    assert result["brier"] == pytest.approx((2 * 0.0002 + 2 * 1.9602) / 4)


def test_ece_weights_bins_by_their_share():
    probabilities = np.vstack([two_class(0.95, 2), two_class(0.55, 2)])
    labels = np.array([0, 0, 0, 1])  # bin (0.933, 1]: 2/2 correct; bin (0.533, 0.6]: 1/2
    result = m.calibration_metrics(probabilities, labels, bins=15)
    assert result["ece"] == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)
    assert result["mce"] == pytest.approx(0.05)
    table = m.reliability_bins(probabilities, labels, 15)
    assert table["counts"][14] == 2 and table["counts"][8] == 2 and table["counts"].sum() == 4


def test_classification_metrics_by_hand():
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = np.array([1, 1, 2, 2])
    result = m.test_metrics(probabilities, labels, ["a", "b", "c"])
    assert result["accuracy"] == 0.5
    assert result["top2_accuracy"] == 0.75  # the last one has class 2 third
    assert result["loss"] == pytest.approx(-np.log([0.3, 0.6, 0.5, 0.1]).mean())
    assert result["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    assert result["per_class"]["a"]["precision"] == 0.0
    assert result["f1_macro"] == pytest.approx((0 + 2 / 3 + 2 / 3) / 3)


def test_temperature_scaling_undoes_over_confidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, (6000, 10))
    calibrated = m.softmax(true_logits)
    labels = np.array([rng.choice(10, p=p) for p in calibrated])
    over_confident = 3.0 * true_logits
    temperature = m.fit_temperature(over_confident[:3000], labels[:3000])
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = m.calibration_metrics(m.softmax(over_confident[3000:]), labels[3000:])
    after = m.calibration_metrics(m.softmax(over_confident[3000:], temperature), labels[3000:])
    assert after["ece"] < before["ece"] / 3 and after["nll"] < before["nll"]
    # accuracy does not change with temperature
    assert (m.softmax(over_confident, temperature).argmax(1) == over_confident.argmax(1)).all()


def test_risk_coverage_by_hand():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 0])  # right, wrong, right, wrong by confidence order
    curve = m.risk_coverage(probabilities, labels)
    np.testing.assert_allclose(curve["accuracy"], [1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(curve["coverage"], [0.25, 0.5, 0.75, 1.0])
    assert curve["aurc"] == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)


def test_entropy():
    np.testing.assert_allclose(
        m.entropy(np.array([[1.0, 0.0], [0.5, 0.5]])), [0, np.log(2)], atol=1e-9
    )


def test_soft_vote_is_the_mean_and_best_model_respects_direction():
    first = np.array([[0.9, 0.1], [0.4, 0.6]])
    second = np.array([[0.3, 0.7], [0.2, 0.8]])
    np.testing.assert_allclose(soft_vote([first, second]), (first + second) / 2)
    rows = [
        {"model": "a", "accuracy": 0.8, "loss": 0.5},
        {"model": "b", "accuracy": 0.7, "loss": 0.4},
    ]
    assert best_of(rows, "accuracy")["model"] == "a"
    assert best_of(rows, "loss")["model"] == "b"
