"""Robustness as a metric: a model's accuracy on the corrupted test images of
stages/common/evaluation/corruptions.py, per corruption and severity, and two headline numbers:

- ``mca``: the mean corruption accuracy over every corruption and severity evaluated;
- ``mca_drop``: the relative drop from clean accuracy, (clean - mCA) / clean, with clean
  accuracy measured on the same test images (so a subset's luck cancels out).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from stages.common.config.evaluation import EvaluateParams
from stages.common.data.prepared import Split
from stages.common.evaluation.corruptions import CORRUPTIONS, corrupt
from stages.common.models.inference import LoadedModel, predict_logits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Robustness:
    images: int
    clean_accuracy: float  # on the same images
    accuracy: dict[str, dict[int, float]]  # corruption -> severity -> accuracy
    seconds: float  # corrupting and predicting

    @property
    def mca(self) -> float:
        return float(np.mean([a for row in self.accuracy.values() for a in row.values()]))

    @property
    def mca_drop(self) -> float | None:
        """None when nothing was right on clean images: no drop to speak of."""
        if self.clean_accuracy == 0:
            return None
        return (self.clean_accuracy - self.mca) / self.clean_accuracy

    def details(self) -> dict:
        severities = list(next(iter(self.accuracy.values())))
        return {
            "images": self.images,
            "clean_accuracy": self.clean_accuracy,
            "mca": self.mca,
            "mca_drop": self.mca_drop,
            "by_corruption": {
                c: float(np.mean(list(row.values()))) for c, row in self.accuracy.items()
            },
            "by_severity": {
                str(s): float(np.mean([row[s] for row in self.accuracy.values()]))
                for s in severities
            },
            "by_family": _family_means(self.accuracy),
            "accuracy": {
                c: {str(s): a for s, a in row.items()} for c, row in self.accuracy.items()
            },
        }


def _family_means(accuracy: dict[str, dict[int, float]]) -> dict[str, float]:
    families: dict[str, list[float]] = {}
    for corruption, row in accuracy.items():
        families.setdefault(CORRUPTIONS[corruption].family, []).extend(row.values())
    return {family: float(np.mean(values)) for family, values in families.items()}


def chosen_test_images(labels: np.ndarray, images: int | None, seed: int) -> np.ndarray:
    """Sorted test-split positions: ``images`` of them drawn with ``seed``, or all."""
    if images is None or images >= len(labels):
        return np.arange(len(labels))
    return np.sort(np.random.default_rng(seed).choice(len(labels), images, replace=False))


def evaluate_robustness(
    loaded: LoadedModel, test: Split, settings: EvaluateParams, seed: int, name: str
) -> Robustness:
    """Accuracy of ``loaded`` on every corruption and severity of ``settings.robustness``,
    with the test-time augmentation of the clean evaluation."""
    spec = settings.robustness
    started = time.perf_counter()
    chosen = chosen_test_images(test.labels, spec.images, seed)
    images, labels = test.images[chosen], test.labels[chosen]

    def accuracy(batch: np.ndarray) -> float:
        logits = predict_logits(
            loaded.model, batch, loaded.device_input, settings.batch_size, tta=settings.tta
        )
        return float((logits.argmax(1).numpy() == labels).mean())

    clean = accuracy(images)
    table: dict[str, dict[int, float]] = {}
    cells = [(c, s) for c in spec.corruptions for s in spec.severities]
    for corruption, severity in tqdm(cells, desc=f"{name} corruptions", disable=None, leave=False):
        corrupted = corrupt(images, corruption, severity, seed, chosen)
        table.setdefault(corruption, {})[severity] = accuracy(corrupted)
    result = Robustness(len(chosen), clean, table, time.perf_counter() - started)
    log.info(
        "%s: mean corruption accuracy %.4f over %d corruptions x %d severities of %d test "
        "images (clean %.4f on them, a relative drop of %s) in %.0f s",
        name,
        result.mca,
        len(spec.corruptions),
        len(spec.severities),
        result.images,
        clean,
        "-" if result.mca_drop is None else f"{result.mca_drop:.1%}",
        result.seconds,
    )
    return result
