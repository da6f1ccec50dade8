"""What training will cost on this machine, from a few real steps timed before DVC starts.

Each model is built (random weights: a step costs the same whatever the weights) and trained
for a few steps by the engine's own Trainer, on a batch of generated images at the configured
size, batch, augmentation, precision and memory layout. On a CPU a step's time grows with the
batch, so slow models are timed on a small batch and scaled per image; on a GPU the full
batch is timed (which also shows that it fits in memory). The estimate covers the training
steps and the per-epoch validation pass of every epoch (early stopping can only shorten it);
progressive unfreezing is timed with epoch 1's frozen layers, the cheapest.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from stages.common.dataset import PreparedData, Split
from stages.common.engine import Trainer, TrainRun
from stages.common.freezing import Freezer
from stages.common.inference import predict_logits
from stages.common.models import create_architecture, input_size, resolve_preprocessing
from stages.common.params import Params

log = logging.getLogger(__name__)
FIRST_CPU_BATCH = 2  # a CPU step is timed on this many images first, then on 4x as many ...
CPU_STEP_BUDGET = 3.0  # ... while a step of the next size is expected to take at most this
TIMED_STEPS = 2  # timed steps per size, after one untimed step at that size
CUDA_WARM_UP_STEPS = 3  # the allocator, cuDNN's algorithm search


@dataclass(frozen=True)
class ModelEstimate:
    name: str
    arch: str
    img_size: int
    device: str
    timed_batch: int  # images per timed step (a CPU's per-image time is scaled to the batch)
    step_seconds: float  # one training step at the configured batch, fetching included
    eval_seconds_per_image: float
    steps_per_epoch: int
    val_images: int
    epochs: int
    measured_seconds: float  # what timing this model took

    @property
    def epoch_seconds(self) -> float:
        validation = self.val_images * self.eval_seconds_per_image
        return self.steps_per_epoch * self.step_seconds + validation

    @property
    def seconds(self) -> float:
        return self.epochs * self.epoch_seconds


def estimate_model(
    params: Params, name: str, train_images: int, val_images: int, epochs: int
) -> ModelEstimate:
    """Time ``models.<name>`` training on this machine's device; extrapolate to ``epochs``
    epochs of ``train_images`` training and ``val_images`` validation images."""
    started = time.perf_counter()
    batch_size = params.train.batch_size
    with _quiet_engine():
        trainer = _trainer(params, name)
        fetch_started = time.perf_counter()
        images, targets = _batch(trainer)
        fetch = time.perf_counter() - fetch_started
        if trainer.device.type == "cuda":
            timed_batch = batch_size
            _step_seconds(trainer, images, targets, CUDA_WARM_UP_STEPS)
            train = _step_seconds(trainer, images, targets, TIMED_STEPS)
            step = max(train, fetch)  # the loader's workers fetch while the GPU trains
        else:
            timed_batch, per_image = _cpu_per_image(trainer, images, targets)
            step = per_image * batch_size + fetch
        val = trainer.run.data.val.images[:timed_batch]
        eval_per_image = _eval_seconds(trainer, val) / len(val)
    spec = params.model(name)
    return ModelEstimate(
        name=name,
        arch=spec.arch,
        img_size=trainer.device_input.size,
        device=trainer.device.type,
        timed_batch=timed_batch,
        step_seconds=step,
        eval_seconds_per_image=eval_per_image,
        steps_per_epoch=train_images // batch_size,
        val_images=val_images,
        epochs=epochs,
        measured_seconds=time.perf_counter() - started,
    )


def _cpu_per_image(
    trainer: Trainer, images: torch.Tensor, targets: torch.Tensor
) -> tuple[int, float]:
    """(images per step timed last, seconds per image): a CPU's step time grows with the
    batch, and per image it falls as the batch grows, so the batch grows 4x at a time as long
    as a step stays within CPU_STEP_BUDGET (the full batch of a small net; a few images of a
    224 px ResNet-50, which takes seconds per image here)."""
    batch = min(len(targets), FIRST_CPU_BATCH)
    _step_seconds(trainer, images[:batch], targets[:batch], 1)
    per_image = _step_seconds(trainer, images[:batch], targets[:batch], TIMED_STEPS) / batch
    while batch < len(targets) and per_image * min(len(targets), 4 * batch) <= CPU_STEP_BUDGET:
        batch = min(len(targets), 4 * batch)
        _step_seconds(trainer, images[:batch], targets[:batch], 1)
        per_image = _step_seconds(trainer, images[:batch], targets[:batch], TIMED_STEPS) / batch
    return batch, per_image


def _trainer(params: Params, name: str) -> Trainer:
    """The engine's Trainer for ``models.<name>``, one epoch over generated data of one batch."""
    run = generated_run(params, name, params.train.batch_size)
    return Trainer(replace(run, params=params.train.model_copy(update={"epochs": 1})))


def generated_run(params: Params, name: str, images: int) -> TrainRun:
    """A TrainRun of ``models.<name>`` as params.yaml has it, over ``images`` generated images
    (train, validation and test alike), its resume state nowhere in particular."""
    spec = params.model(name)
    torch.manual_seed(params.seed)
    model = create_architecture(spec.arch, 10, input_size(spec), pretrained=False)
    preprocessing = resolve_preprocessing(model, bool(spec.pretrained), input_size(spec))
    freezer = Freezer(model, spec.freezing, f"models.{name}.freezing")
    freezer.apply(0)
    rng = np.random.default_rng(params.seed)
    split = Split(
        rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8),
        np.arange(images, dtype=np.int64) % 10,
    )
    return TrainRun(
        name=name,
        params=params.train,
        lr=params.learning_rate(name),
        model=model,
        preprocessing=preprocessing,
        freezer=freezer,
        data=PreparedData([str(k) for k in range(10)], split, split, split),
        seed=params.seed,
        state_path=Path(tempfile.gettempdir()) / "unused",
        fingerprint="estimate",
    )


def _batch(trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented training batch, fetched as the DataLoader fetches it."""
    dataset = trainer.loader.dataset
    return dataset.__getitems__([(0, i) for i in range(len(dataset))])  # type: ignore[attr-defined]


def _step_seconds(
    trainer: Trainer, images: torch.Tensor, targets: torch.Tensor, steps: int
) -> float:
    """The mean seconds of ``steps`` training steps on this batch."""
    trainer.model.train()
    started = time.perf_counter()
    for step in range(steps):
        trainer.train_step(images, targets, step)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def _eval_seconds(trainer: Trainer, images: np.ndarray) -> float:
    """Seconds of one validation pass over ``images``."""
    started = time.perf_counter()
    predict_logits(
        trainer.evaluation_model(), images, trainer.device_input, len(images), trainer.amp
    )
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


@contextmanager
def _quiet_engine() -> Iterator[None]:
    """The Trainer's set-up lines are about a real run; not about these timing runs."""
    engine_log = logging.getLogger("stages.common.engine")
    level = engine_log.level
    engine_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        engine_log.setLevel(level)


def duration(seconds: float) -> str:
    """``seconds`` as people say it: 0.4 s, 45 s, 12 min, 3.4 h, 5.1 days."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
