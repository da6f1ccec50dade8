"""What training will cost on this machine, from real steps timed before DVC starts.

Each model is built (random weights: a step costs the same whatever the weights) and trained
for a few steps by the engine's own Trainer, on generated images at the configured size,
batch, augmentation, precision and memory layout. On a CPU a step's time grows with the
batch, so a slow model is timed on small batches and its full batch's step read off the line
through them; a model whose full batch is cheap is timed in whole epochs of the engine's own
loop (the fetch, the step and the bookkeeping between steps, which a busy machine slows
most). On a GPU the full batch is timed (which also shows that it fits in memory). The
estimate covers the training steps and the per-epoch validation pass of every epoch (early
stopping can only shorten it); progressive unfreezing is timed with epoch 1's frozen
layers, the cheapest.

A busy machine makes single timings lie (a step that lost its core to another process for a
few milliseconds looks ten times slower), so every piece of work is timed several times, for
at least MIN_TIMED_SECONDS: the mean is the estimate (a run's time is the sum of its steps,
preemptions included), the fastest and slowest repeats give its range, and the batch grows by
the fastest repeats, so that one preempted step cannot stop it.
"""

from __future__ import annotations

import functools
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from stages.common.config.params import Params
from stages.common.data.prepared import PreparedData, Split
from stages.common.models.factory import create_architecture, input_size, resolve_preprocessing
from stages.common.models.inference import predict_logits
from stages.common.plumbing.durations import duration
from stages.common.plumbing.logs import quieted
from stages.common.training.freezing import Freezer
from stages.common.training.loader import DeviceBatches
from stages.common.training.trainer import Trainer, TrainRun

log = logging.getLogger(__name__)
FIRST_CPU_BATCH = 2  # a CPU step is timed on this many images first, then 2x, then 4x ...
CPU_STEP_BUDGET = 4.0  # ... while a step of the next size cannot take longer than this
MIN_TIMED_SECONDS = 1.0  # each piece of work is timed for at least this long in all ...
MIN_REPEATS = 3  # ... and at least this often (after one untimed run) ...
MAX_REPEATS = 20  # ... and no more often than this
CUDA_WARM_UP_STEPS = 3  # the allocator, cuDNN's algorithm search
LOOP_STEPS = 2  # a CPU whose full batch is cheap is timed in whole epochs of this many steps


@dataclass(frozen=True)
class Spread:
    """A duration timed several times: the mean (what many repeats add up to, preemptions
    included), and the fastest and slowest repeats."""

    low: float
    typical: float
    high: float

    @classmethod
    def of(cls, samples: list[float]) -> Spread:
        return cls(min(samples), statistics.fmean(samples), max(samples))

    def __add__(self, other: Spread | float) -> Spread:
        if isinstance(other, Spread):
            return Spread(
                self.low + other.low, self.typical + other.typical, self.high + other.high
            )
        return Spread(self.low + other, self.typical + other, self.high + other)

    def __mul__(self, factor: float) -> Spread:
        return Spread(self.low * factor, self.typical * factor, self.high * factor)

    __rmul__ = __mul__
    __radd__ = __add__

    def longer(self, other: Spread) -> Spread:
        """Each of the two's longer: the time of two things done side by side."""
        return Spread(
            max(self.low, other.low), max(self.typical, other.typical), max(self.high, other.high)
        )

    @property
    def disagrees(self) -> bool:
        """The repeats disagreed enough (the slowest over 1.5x the fastest) that one number
        would mislead."""
        return self.high > 1.5 * self.low


@dataclass(frozen=True)
class ModelEstimate:
    name: str
    arch: str
    img_size: int
    device: str
    batch_size: int  # the model's train.batch_size
    timed_batch: int  # images per timed step (a CPU's per-image time is scaled to the batch)
    step_seconds: Spread  # one training step at the configured batch, fetching included
    eval_seconds_per_image: Spread
    steps_per_epoch: int
    val_images: int
    epochs: int
    measured_seconds: float  # what timing this model took

    @property
    def epoch_seconds(self) -> Spread:
        """One epoch: its training steps and its validation pass."""
        return (
            self.steps_per_epoch * self.step_seconds + self.val_images * self.eval_seconds_per_image
        )

    @property
    def seconds(self) -> Spread:
        return self.epochs * self.epoch_seconds

    @property
    def step_total(self) -> Spread:
        """The training steps of every epoch, without validation (a train stage's
        train_minutes)."""
        return self.epochs * self.steps_per_epoch * self.step_seconds


def estimate_model(
    params: Params, name: str, train_images: int, val_images: int, epochs: int
) -> ModelEstimate:
    """Time ``models.<name>`` training on this machine's device; extrapolate to ``epochs``
    epochs of ``train_images`` training and ``val_images`` validation images."""
    started = time.perf_counter()
    batch_size = params.training(name).batch_size
    with quieted(Trainer.__module__):
        trainer = _trainer(params, name)
        fetch = repeated(lambda: _batch(trainer))
        images, targets = _batch(trainer)
        if trainer.device.type == "cuda":
            timed_batch = batch_size
            _train_steps(trainer, images, targets, CUDA_WARM_UP_STEPS)
            train = repeated(lambda: _train_steps(trainer, images, targets), warm_up=False)
            # a DataLoader's workers fetch while the GPU trains; a gather on the GPU queues
            # behind the step
            step = (
                train + fetch if isinstance(trainer.batches, DeviceBatches) else train.longer(fetch)
            )
        else:
            timed_batch, full_step = _cpu_step(trainer, images, targets)
            if full_step is None:  # the engine's own loop: fetch, step, bookkeeping
                step = repeated(lambda: trainer.train_epoch(0)) * (1 / trainer.steps_per_epoch)
            else:
                step = full_step + fetch
        val = trainer.run.data.val.images[:timed_batch]
        eval_per_image = repeated(lambda: _validate(trainer, val)) * (1 / len(val))
    spec = params.model(name)
    return ModelEstimate(
        name=name,
        arch=spec.arch,
        img_size=trainer.device_input.size,
        device=trainer.device.type,
        batch_size=batch_size,
        timed_batch=timed_batch,
        step_seconds=step,
        eval_seconds_per_image=eval_per_image,
        steps_per_epoch=train_images // batch_size,
        val_images=val_images,
        epochs=epochs,
        measured_seconds=time.perf_counter() - started,
    )


def estimate_student(
    params: Params,
    name: str,
    known: dict[str, ModelEstimate],
    train_images: int,
    val_images: int,
) -> ModelEstimate:
    """``distill.<name>``: its net's training (timed as its `models` entry's, or taken from
    ``known``, the estimates already made) plus its teacher's forward pass over every training
    batch (timed as the teacher's validation pass, or taken from ``known``)."""
    entry = params.distill[name]
    for role in (entry.student, entry.teacher):
        if role not in known:
            epochs = params.training(role).epochs
            known[role] = estimate_model(params, role, train_images, val_images, epochs)
    student, teacher = known[entry.student], known[entry.teacher]
    per_step = teacher.eval_seconds_per_image * student.batch_size
    return replace(
        student,
        name=name,
        arch=f"{student.arch} taught by {entry.teacher}",
        step_seconds=student.step_seconds + per_step,
    )


def repeated(work: Callable[[], object], warm_up: bool = True) -> Spread:
    """``work`` timed until MIN_TIMED_SECONDS have passed in it and it ran MIN_REPEATS times
    (MAX_REPEATS at most), after one untimed run when ``warm_up``: the fastest of three is
    rarely one a busy machine slowed."""
    if warm_up:
        work()
    samples: list[float] = []
    while len(samples) < MAX_REPEATS and (
        len(samples) < MIN_REPEATS or sum(samples) < MIN_TIMED_SECONDS
    ):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return Spread.of(samples)


def _cpu_step(
    trainer: Trainer, images: torch.Tensor, targets: torch.Tensor
) -> tuple[int, Spread | None]:
    """(the largest batch timed, seconds of a step at the full batch). A CPU step costs a
    fixed part (thread wake-ups, Python, the optimizer: most of a tiny step, and many times
    more on a busy machine) plus a part per image; timing two batch sizes separates them.
    The batch doubles once, then grows 4x at a time, while a step of the next size is
    expected (_next_step) within CPU_STEP_BUDGET: up to the full batch of a small net, 16
    images of a 224 px ResNet-50, 4 of a ViT-B/16. (Not by the line's prediction: on a busy
    machine the difference between two tiny batches is mostly noise, and a line through it
    priced a 6 s training in 20 minutes.) The full batch's step is read off the line through
    the last two sizes; None when the growth reaches the full batch, which the engine's own
    loop then times (not here too: a batch of 1,000 costs seconds a step)."""
    full = len(targets)
    timed: list[tuple[int, Spread]] = []
    batch = min(full, FIRST_CPU_BATCH)
    while True:
        if batch == full:
            return full, None
        step = repeated(functools.partial(_train_steps, trainer, images[:batch], targets[:batch]))
        timed.append((batch, step))
        grown = min(full, 2 * batch if len(timed) == 1 else 4 * batch)
        if grown == batch or _next_step(timed, grown) > CPU_STEP_BUDGET:
            return batch, _line(timed, full)
        batch = grown


def _next_step(timed: list[tuple[int, Spread]], batch: int) -> float:
    """What a step of ``batch`` images will take at most, from the fastest repeats: the last
    size's, grown with the batch as fast as between the last two sizes, but at least as the
    square root of the batch (two tiny sizes may differ by noise alone) and at most in
    proportion to it (a step's fixed part does not grow)."""
    size, step = timed[-1]
    power = 1.0
    if len(timed) > 1:
        before, at_before = timed[-2]
        growth = math.log(max(step.low, 1e-9) / max(at_before.low, 1e-9))
        power = min(1.0, max(0.5, growth / math.log(size / before)))
    return step.low * (batch / size) ** power


def _line(timed: list[tuple[int, Spread]], batch: int) -> Spread:
    """A step of ``batch`` images, on the line through the fastest repeats of the last two
    sizes timed (its slope at least 0; through 0 when one size was timed). A busy machine
    slows a step in proportion to its length, so the mean and the slowest repeat keep their
    ratio to the fastest at the largest size timed: noise is not extrapolated along the line."""
    size, step = timed[-1]
    if len(timed) == 1:
        fastest = step.low * batch / size
    else:
        small, at_small = timed[-2]
        slope = max(0.0, (step.low - at_small.low) / (size - small))
        fastest = step.low + slope * (batch - size)
    return step * (fastest / step.low)


def _trainer(params: Params, name: str) -> Trainer:
    """The engine's Trainer for ``models.<name>``, one epoch over generated data of
    LOOP_STEPS batches."""
    run = generated_run(params, name, LOOP_STEPS * params.training(name).batch_size)
    return Trainer(replace(run, params=run.params.model_copy(update={"epochs": 1})))


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
        params=params.training(name),
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
    """One augmented training batch, fetched as the training loop fetches it."""
    batches = trainer.batches
    if isinstance(batches, DeviceBatches):
        return batches.fetch(torch.arange(trainer.local_batch, device=trainer.device), 0)
    indices = [(0, i) for i in range(trainer.local_batch)]
    return batches.dataset.__getitems__(indices)  # type: ignore[attr-defined]


def _train_steps(
    trainer: Trainer, images: torch.Tensor, targets: torch.Tensor, steps: int = 1
) -> None:
    """``steps`` training steps on this batch, finished on the device."""
    trainer.model.train()
    for step in range(steps):
        trainer.train_step(images, targets, step)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()


def _validate(trainer: Trainer, images: np.ndarray) -> None:
    """One validation pass over ``images``, finished on the device."""
    predict_logits(
        trainer.optimisation.evaluation_model(),
        images,
        trainer.device_input,
        len(images),
        trainer.amp,
    )
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()


def spread_duration(spread: Spread) -> str:
    """The typical duration, and its range when the timed repeats disagreed:
    '12 min (9 min to 20 min)'."""
    if not spread.disagrees:
        return duration(spread.typical)
    return f"{duration(spread.typical)} ({duration(spread.low)} to {duration(spread.high)})"
