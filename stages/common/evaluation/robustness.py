"""Robustness as a metric: a model's accuracy on the corrupted test images of
stages/common/evaluation/corruptions.py, per corruption and severity, and two headline numbers:

- ``mca``: the mean corruption accuracy over every corruption and severity evaluated;
- ``mca_drop``: the relative drop from clean accuracy, (clean - mCA) / clean, with clean
  accuracy measured on the same test images (so a subset's luck cancels out).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from stages.common.config.evaluation import EvaluateParams
from stages.common.data.prepared import Split
from stages.common.evaluation.corruptions import CORRUPTIONS, corrupt
from stages.common.models.inference import LoadedModel, predict_logits
from stages.common.plumbing.machine import MAX_AUTO_WORKERS, available_cpus

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
    workers = generation_workers(loaded.device_input.device)
    generated = corrupted_cells(images, cells, seed, chosen, workers)
    progress = tqdm(cells, desc=f"{name} corruptions", disable=None, leave=False)
    for (corruption, severity), corrupted in zip(progress, generated, strict=True):
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


Cell = tuple[str, int]  # (corruption, severity)


def generation_workers(device: torch.device) -> int:
    """Processes that corrupt images while a GPU predicts (one core left to feed it, at most
    MAX_AUTO_WORKERS); none on a CPU, whose cores are busy predicting: there, generation is a
    few percent of the time and a worker beside the prediction's threads gained nothing
    measurable (docs/robustness.md)."""
    if device.type != "cuda":
        return 0
    return min(available_cpus() - 1, MAX_AUTO_WORKERS)


def corrupted_cells(
    images: np.ndarray, cells: Sequence[Cell], seed: int, chosen: np.ndarray, workers: int
) -> Iterator[np.ndarray]:
    """Each cell's corrupted ``images`` (test-split positions ``chosen``), in order. With
    ``workers``, the next cells are generated in that many processes while the caller uses
    the ones before (at most two per worker held ahead); the arrays are the same either way,
    as each image's randomness is its own."""
    if workers <= 0:
        for corruption, severity in cells:
            yield corrupt(images, corruption, severity, seed, chosen)
        return
    with ProcessPoolExecutor(
        workers,
        mp_context=_worker_start(),
        initializer=_hold,
        initargs=(images, seed, chosen),
    ) as pool:
        ahead: deque[Future[np.ndarray]] = deque()
        for cell in cells:
            ahead.append(pool.submit(_corrupt_held, cell))
            if len(ahead) > 2 * workers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _worker_start() -> multiprocessing.context.BaseContext:
    """Fork, as the DataLoader's workers start: in ~0.1 s, where spawning re-imports the
    stage in each (~10 s measured on the 2-core VM, more than the generation it hides). The
    children never touch the parent's CUDA context. Spawn where there is no fork."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


_held: tuple[np.ndarray, int, np.ndarray] | None = None  # a generation worker's images


def _hold(images: np.ndarray, seed: int, chosen: np.ndarray) -> None:
    """A generation worker's start: the images to corrupt, once, and one torch thread (the
    worker is one of several processes sharing the cores). Ctrl-C is the stage's to handle:
    the worker ignores it and ends with the pool."""
    global _held
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    _held = (images, seed, chosen)


def _corrupt_held(cell: Cell) -> np.ndarray:
    if _held is None:
        raise RuntimeError("a generation worker starts with _hold")
    images, seed, chosen = _held
    return corrupt(images, cell[0], cell[1], seed, chosen)
