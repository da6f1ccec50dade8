"""An A/B split between two models: which variant answers a client, the true labels clients
send back, and whether the variants' accuracies differ.

A client that sends ``X-Client-Id`` always meets the same variant (a SHA-256 of the id, not
Python's per-process hash, so restarts and replicas agree); one that does not is routed at
random. The difference in accuracy is tested with Fisher's exact test on the 2x2 table of
right and wrong answers (scipy.stats.fisher_exact), each accuracy with its Wilson interval.
Looking again and again at a running test inflates its false positives: decide the number of
labels before starting and read the verdict then.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

CLIENT_HEADER = "x-client-id"
VARIANT_HEADER = "x-model-variant"
ALPHA = 0.05  # the significance level of the verdict
CONFIDENCE_LEVEL = 0.95  # of each accuracy's interval


def stable_fraction(client: str) -> float:
    """``client`` as a number in [0, 1), the same in every process."""
    digest = hashlib.sha256(client.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class Router:
    """``names[0]`` answers a share ``first_share`` of clients, ``names[1]`` the rest."""

    names: tuple[str, ...]
    first_share: float = 1.0
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def choose(self, client: str | None) -> str:
        if len(self.names) == 1:
            return self.names[0]
        draw = stable_fraction(client) if client else float(self.rng.random())
        return self.names[0] if draw < self.first_share else self.names[1]


class FeedbackRefused(ValueError):
    """A label the ledger cannot take; ``kind``: unknown (an id never issued, forgotten, or
    labelled already) or label (not one of the classes)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Tally:
    labelled: int = 0
    correct: int = 0


class FeedbackLedger:
    """The latest ``capacity`` predictions, waiting for their true label, and each variant's
    tally of right and wrong."""

    def __init__(self, names: tuple[str, ...], classes: list[str], capacity: int = 100_000):
        self.classes = classes
        self.capacity = capacity
        self.pending: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self.tallies = {name: Tally() for name in names}

    def issue(self, variant: str, predicted: int) -> str:
        """A prediction's id, for the label sent back later."""
        prediction_id = secrets.token_hex(8)
        self.pending[prediction_id] = (variant, predicted)
        if len(self.pending) > self.capacity:
            self.pending.popitem(last=False)
        return prediction_id

    def record(self, prediction_id: str, label: str) -> tuple[str, bool]:
        """Count ``label`` as prediction ``prediction_id``'s truth: its variant and whether
        it was right. A prediction takes one label."""
        if label not in self.classes:
            raise FeedbackRefused("label", f"label: '{label}' is not one of {self.classes}")
        entry = self.pending.pop(prediction_id, None)
        if entry is None:
            raise FeedbackRefused(
                "unknown",
                f"prediction_id: '{prediction_id}' unknown (labelled already, or one of more "
                f"than the latest {self.capacity:,})",
            )
        variant, predicted = entry
        right = self.classes[predicted] == label
        tally = self.tallies[variant]
        tally.labelled += 1
        tally.correct += right
        return variant, right


def accuracy(tally: Tally) -> dict[str, Any]:
    if not tally.labelled:
        return {"labelled": 0, "correct": 0, "accuracy": None, "interval": None}
    interval = stats.binomtest(tally.correct, tally.labelled).proportion_ci(
        CONFIDENCE_LEVEL, method="wilson"
    )
    return {
        "labelled": tally.labelled,
        "correct": tally.correct,
        "accuracy": tally.correct / tally.labelled,
        "interval": [interval.low, interval.high],
    }


def compare_variants(tallies: dict[str, Tally]) -> dict[str, Any]:
    """Each variant's accuracy on the labels sent back and, for two, the test of their
    difference."""
    report: dict[str, Any] = {
        "variants": {name: accuracy(tally) for name, tally in tallies.items()},
        "alpha": ALPHA,
    }
    if len(tallies) != 2:
        return report
    (first, a), (second, b) = tallies.items()
    if not a.labelled or not b.labelled:
        report["verdict"] = "waiting for labels of both variants"
        return report
    table = [[a.correct, a.labelled - a.correct], [b.correct, b.labelled - b.correct]]
    p_value = float(stats.fisher_exact(table).pvalue)
    difference = b.correct / b.labelled - a.correct / a.labelled
    if p_value >= ALPHA:
        verdict = f"no significant difference at alpha {ALPHA}"
    else:
        verdict = f"{second if difference > 0 else first} is more accurate"
    report.update(
        {"difference": {f"{second}-{first}": difference}, "p_value": p_value, "verdict": verdict}
    )
    return report
