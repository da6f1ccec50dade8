"""Drift: does what the service sees still look like the test split its model was released on?

At release, compare stores the reference beside the model (release/drift_reference.json): for
each test image, eight input features (per-channel mean and standard deviation, brightness and
contrast: the mean and standard deviation of its luminance) and the model's confidence (its top
probability), plus the predicted-class counts and, for reading, the confidence histogram.

The service keeps the features of the last ``window`` images it answered and, every ``every``
new images, tests the window against the reference: each continuous feature with the
two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``), the predicted classes with a
chi-square test of homogeneity (``scipy.stats.chi2_contingency``). These are the tests
alibi-detect's KSDrift and ChiSquareDrift run, per feature with a Bonferroni correction;
scipy is already installed (scikit-learn needs it), where alibi-detect would bring TensorFlow
or PyTorch extras and numba, and evidently a reporting stack. Verdict: "drift" when a test's
p-value is below ``alpha`` divided by the number of tests; "collecting" until the window holds
``min_images``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from scipy import stats

from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import read_json

LUMINANCE = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's "L" conversion
INPUT_FEATURES = (
    "mean_red",
    "mean_green",
    "mean_blue",
    "std_red",
    "std_green",
    "std_blue",
    "brightness",
    "contrast",
)
CONFIDENCE = "confidence"
PREDICTED_CLASS = "predicted_class"
CONTINUOUS = (*INPUT_FEATURES, CONFIDENCE)
CONFIDENCE_BINS = 20
REFERENCE_DIGITS = 5  # features are in 0..1: 1e-5 is below what 8-bit pixels resolve


class DriftReference(BaseModel):
    """The test split as the released model saw it: what live traffic is compared with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    classes: list[str]
    images: int
    features: dict[str, list[float]]  # CONTINUOUS -> one value per test image
    class_counts: list[int]  # predicted, per class
    confidence_histogram: dict[str, list[float]]  # edges, shares: for reading, not testing

    @model_validator(mode="after")
    def _consistent(self) -> DriftReference:
        missing = [name for name in CONTINUOUS if name not in self.features]
        if missing:
            raise ValueError(f"features: {missing[0]} missing")
        for name, values in self.features.items():
            if len(values) != self.images:
                raise ValueError(f"features.{name}: {len(values)} values for {self.images} images")
        if len(self.class_counts) != len(self.classes):
            raise ValueError(
                f"class_counts: {len(self.class_counts)} counts for {len(self.classes)} classes"
            )
        if self.images < 1:
            raise ValueError("images: the reference holds none")
        return self

    @classmethod
    def load(cls, path: Path) -> DriftReference:
        try:
            return cls.model_validate(read_json(path))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise DataError(f"{path}: {where}: {first['msg']}") from None


def image_features(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 images -> (N, 8) INPUT_FEATURES, each in 0..1."""
    pixels = images.reshape(len(images), -1, 3).astype(np.float64) / 255.0
    luminance = pixels @ LUMINANCE
    return np.column_stack(
        [
            pixels.mean(axis=1),
            pixels.std(axis=1),
            luminance.mean(axis=1),
            luminance.std(axis=1),
        ]
    )


def reference_of(
    images: np.ndarray, probabilities: np.ndarray, classes: list[str]
) -> DriftReference:
    """The reference of a model's test split: its images and the probabilities it gave them
    (as served: with its TTA and temperature)."""
    features = np.column_stack([image_features(images), probabilities.max(axis=1)])
    counts = np.bincount(probabilities.argmax(axis=1), minlength=len(classes))
    shares, edges = np.histogram(features[:, -1], bins=CONFIDENCE_BINS, range=(0.0, 1.0))
    rounded = np.round(features, REFERENCE_DIGITS)
    return DriftReference(
        classes=classes,
        images=len(images),
        features={name: rounded[:, i].tolist() for i, name in enumerate(CONTINUOUS)},
        class_counts=counts.tolist(),
        confidence_histogram={
            "edges": np.round(edges, 4).tolist(),
            "shares": np.round(shares / max(len(images), 1), 6).tolist(),
        },
    )


def ks_two_sample(sample: np.ndarray, sorted_reference: np.ndarray) -> tuple[float, float]:
    """``scipy.stats.ks_2samp(sample, reference, method="asymp")``'s statistic and p-value,
    against a reference sorted once: ks_2samp sorts and merges all 10,000 reference values on
    each call (1.0 ms a feature on the 2-core VM), where this reads the reference's distribution
    function at the sample's points only (0.19 ms: the largest gap between the two step
    functions is at one of them, or just before it). Equal to ks_2samp's: tested."""
    sample = np.sort(sample)
    n, m = len(sample), len(sorted_reference)
    below = np.searchsorted(sample, sample, side="left") / n
    up_to = np.searchsorted(sample, sample, side="right") / n
    reference_below = np.searchsorted(sorted_reference, sample, side="left") / m
    reference_up_to = np.searchsorted(sorted_reference, sample, side="right") / m
    statistic = max(np.abs(up_to - reference_up_to).max(), np.abs(below - reference_below).max())
    # Smirnov's asymptotic distribution, as ks_2samp's method="asymp" uses it
    p_value = stats.kstwo.sf(statistic, np.round(n * m / (n + m)))
    return float(statistic), float(np.clip(p_value, 0.0, 1.0))


@dataclass(frozen=True)
class DriftSettings:
    window: int = 500  # images: the latest ones the service answered
    min_images: int = 100  # no verdict before the window holds this many (or is full)
    every: int = 10  # new images between two tests of the window
    # per check, all tests together (Bonferroni): 0.01 rang on 1 to 2 of ~300 checks of clean
    # synthetic traffic, 0.001 on none of ~2,000 (tests/test_monitoring.py, docs/monitoring.md)
    alpha: float = 0.001

    @property
    def first_check(self) -> int:
        return min(self.min_images, self.window)

    @property
    def tests(self) -> int:
        return len(CONTINUOUS) + 1

    @property
    def per_test(self) -> float:
        return self.alpha / self.tests


@dataclass
class DriftMonitor:
    """A sliding window of live images' features, tested against ``reference``."""

    reference: DriftReference
    settings: DriftSettings = field(default_factory=DriftSettings)
    seen: int = 0  # images observed since start
    checks: int = 0
    alarms: int = 0  # checks whose verdict was drift
    first_alarm_at: int | None = None  # images seen when the first alarm rang
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: deque = field(init=False)
    _sorted_reference: list[np.ndarray] = field(init=False)
    _since_check: int = 0

    def __post_init__(self) -> None:
        self.rows = deque(maxlen=self.settings.window)
        self._sorted_reference = [np.sort(self.reference.features[n]) for n in CONTINUOUS]

    def observe(self, images: np.ndarray, probabilities: np.ndarray) -> None:
        """Add a request's images and the probabilities the model gave them; test the window
        when ``every`` images came since the last test."""
        continuous = np.column_stack([image_features(images), probabilities.max(axis=1)])
        # rounded as the reference is: confidences crowd below 1, where 1e-6 reorders them
        rounded = np.round(continuous, REFERENCE_DIGITS)
        features = np.column_stack([rounded, probabilities.argmax(axis=1)])
        self.rows.extend(features)
        self.seen += len(images)
        self._since_check += len(images)
        ready = len(self.rows) >= self.settings.first_check
        if self._since_check >= self.settings.every and ready:
            self._check()

    @property
    def drifted(self) -> bool:
        return any(result["drift"] for result in self.results.values())

    def _check(self) -> None:
        self._since_check = 0
        window = np.asarray(self.rows)
        results = {}
        for i, name in enumerate(CONTINUOUS):
            statistic, p_value = ks_two_sample(window[:, i], self._sorted_reference[i])
            results[name] = self._result("kolmogorov-smirnov", statistic, p_value)
        results[PREDICTED_CLASS] = self._class_result(window[:, -1].astype(int))
        self.results = results
        self.checks += 1
        if self.drifted:
            self.alarms += 1
            if self.first_alarm_at is None:
                self.first_alarm_at = self.seen

    def _class_result(self, predicted: np.ndarray) -> dict[str, Any]:
        live = np.bincount(predicted, minlength=len(self.reference.classes))
        table = np.array([self.reference.class_counts, live])
        table = table[:, table.sum(axis=0) > 0]  # a class neither predicted says nothing
        if table.shape[1] < 2:
            return self._result("chi-square", 0.0, 1.0)
        test = stats.chi2_contingency(table)
        return self._result("chi-square", test.statistic, test.pvalue)

    def _result(self, test: str, statistic: float, p_value: float) -> dict[str, Any]:
        return {
            "test": test,
            "statistic": round(float(statistic), 6),
            "p_value": float(p_value),
            "drift": bool(p_value < self.settings.per_test),
        }

    @property
    def verdict(self) -> str:
        if not self.checks:
            return "collecting"
        return "drift" if self.drifted else "no drift"

    def report(self) -> dict[str, Any]:
        """What GET /v1/drift says of this window."""
        return {
            "verdict": self.verdict,
            "window": {"images": len(self.rows), "size": self.settings.window},
            "images_seen": self.seen,
            "checks": self.checks,
            "alarms": self.alarms,
            "first_alarm_at_image": self.first_alarm_at,
            "thresholds": {
                "alpha": self.settings.alpha,
                "per_test_p_value": self.settings.per_test,
                "min_images": self.settings.first_check,
                "every": self.settings.every,
            },
            "reference_images": self.reference.images,
            "features": self.results,
        }
