"""Classification, calibration and uncertainty metrics on predicted probabilities."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from sklearn.metrics import f1_score, precision_recall_fscore_support


def weighted_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(f1_score(labels, predictions, average="weighted", zero_division=0))


def classification_metrics(logits: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    """Loss (NLL), accuracy and weighted F1 of logits; what training logs per epoch."""
    predictions = logits.argmax(1).numpy()
    return {
        "loss": float(F.cross_entropy(logits, torch.from_numpy(labels))),
        "accuracy": float((predictions == labels).mean()),
        "f1_weighted": weighted_f1(labels, predictions),
    }


def test_metrics(probabilities: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, F1 (weighted, macro), NLL, top-2 accuracy and per-class scores."""
    predictions = probabilities.argmax(1)
    top2 = np.argsort(probabilities, axis=1)[:, -2:]
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=range(len(classes)), zero_division=0
    )
    return {
        "accuracy": float((predictions == labels).mean()),
        "f1_weighted": weighted_f1(labels, predictions),
        "f1_macro": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        "loss": nll(probabilities, labels),
        "top2_accuracy": float((top2 == labels[:, None]).any(1).mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
    }


def nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean squared distance to the one-hot label, summed over classes."""
    onehot = np.eye(probabilities.shape[1])[labels]
    return float(np.square(probabilities - onehot).sum(1).mean())


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> dict:
    """Equal-width bins over top-1 confidence, bin i covering (i/bins, (i+1)/bins]."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
    return {"counts": counts, "accuracy": accuracy, "confidence": mean_confidence}


def calibration_metrics(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15, table: dict | None = None
) -> dict:
    """ECE and MCE (Guo et al. 2017), NLL and Brier score; ``table``: reliability_bins of the
    same inputs, when the caller has it already."""
    table = table if table is not None else reliability_bins(probabilities, labels, bins)
    filled = table["counts"] > 0
    gaps = np.abs(table["accuracy"][filled] - table["confidence"][filled])
    weights = table["counts"][filled] / len(labels)
    return {
        "ece": float((weights * gaps).sum()),
        "mce": float(gaps.max()) if gaps.size else 0.0,
        "nll": nll(probabilities, labels),
        "brier": brier(probabilities, labels),
    }


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits).double() / temperature, 1).numpy()


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising NLL on held-out (validation) logits."""
    result = minimize_scalar(
        lambda t: nll(softmax(logits, t), labels),
        bounds=(0.05, 20.0),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(result.x)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    return -(probabilities * np.log(np.clip(probabilities, 1e-12, 1.0))).sum(1)


def risk_coverage(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray | float]:
    """Accuracy on the most confident share of predictions, for every coverage.

    Sorting by confidence, coverage k/n keeps the k most confident predictions; the area
    under the risk (error) curve (AURC) summarises it: lower is better.
    """
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    order = np.argsort(-confidence, kind="stable")
    kept = np.arange(1, len(labels) + 1)
    accuracy = np.cumsum(correct[order]) / kept
    return {
        "coverage": kept / len(labels),
        "accuracy": accuracy,
        "aurc": float((1 - accuracy).mean()),
    }
