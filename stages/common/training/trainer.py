"""The training engine shared by every train stage (single process or torchrun/DDP)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from stages.common.config.training import TrainParams
from stages.common.data.prepared import PreparedData
from stages.common.evaluation.metrics import classification_metrics
from stages.common.models.checkpoint import Preprocessing
from stages.common.models.factory import count_parameters, to_channels_last
from stages.common.models.inference import DeviceInput, predict_logits
from stages.common.plumbing.errors import ParamsError, StageError
from stages.common.plumbing.machine import (
    Distributed,
    available_cpus,
    loader_workers,
    use_amp,
)
from stages.common.training.augment import AugmentedImages, BatchMixer
from stages.common.training.distillation import Teacher, TrainingLoss
from stages.common.training.early_stopping import EarlyStopping
from stages.common.training.freezing import Freezer, freeze_batchnorm_stats
from stages.common.training.lagged_losses import LaggedLosses, StepLoss
from stages.common.training.loader import DeviceBatches, epoch_sampler, training_batches
from stages.common.training.optimisation import Optimisation
from stages.common.training.resume import (
    load_resume_state,
    restore,
    resume_state,
    save_resume_state,
)

log = logging.getLogger(__name__)


DIVERGED_LOSS_FACTOR = 100


class TrainingDiverged(StageError):
    """The loss became non-finite or exploded: a run that can only get worse."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training, with what a re-run of the same command resumes."""


def _ignore_metrics(metrics: dict[str, float]) -> None:
    """The default of TrainRun.log_epoch: log nowhere."""


def _never_stop(epoch: int, metrics: dict[str, float]) -> bool:
    """The default of TrainRun.should_stop: train every epoch."""
    return False


@dataclass
class TrainRun:
    """Everything one training run needs."""

    name: str
    params: TrainParams
    lr: float  # this model's learning rate (train.lr x its lr_scale)
    model: nn.Module
    preprocessing: Preprocessing
    freezer: Freezer
    data: PreparedData
    seed: int
    state_path: Path
    fingerprint: str
    log_epoch: Callable[[dict[str, float]], None] = _ignore_metrics  # rank 0; replayed on resume
    # called on rank 0 after each epoch; True stops the run (an Optuna pruner's verdict)
    should_stop: Callable[[int, dict[str, float]], bool] = _never_stop
    distributed: Distributed = field(default_factory=Distributed)
    # a student's: the teacher answering for each training batch, and the loss mixing its
    # answers with the labels (None: the labels alone)
    teacher: Teacher | None = None
    loss: TrainingLoss | None = None


@dataclass
class TrainResult:
    best_state: dict[str, torch.Tensor] | None  # None when no epoch ran
    best_epoch: int
    history: list[dict[str, float]]
    stopped_early: bool
    pruned: bool
    train_seconds: float


class Trainer:
    def __init__(self, run: TrainRun) -> None:
        self.run = run
        self.params = run.params
        self.distributed = run.distributed
        self.device = run.distributed.device()
        train_count = len(run.data.train.labels)
        if self.params.batch_size > train_count:
            raise ParamsError(
                f"train.batch_size: {self.params.batch_size} is larger than the training set "
                f"({train_count} images)"
            )
        if self.params.batch_size % self.distributed.world_size:
            raise ParamsError(
                f"train.batch_size: {self.params.batch_size} must divide evenly over "
                f"{self.distributed.world_size} processes"
            )
        self.model = run.model.to(self.device)
        self.channels_last = to_channels_last(self.model, self.params.channels_last, self.device)
        self.amp = use_amp(self.params.amp, self.device)
        self.device_input = DeviceInput(run.preprocessing, self.device, self.channels_last)
        self.mixer = BatchMixer(self.params.augment, len(run.data.classes))
        self.local_batch = self.params.batch_size // self.distributed.world_size
        self.sampler = epoch_sampler(train_count, self.distributed, run.seed)
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        self.batches = self._batches()
        self.optimisation = Optimisation(
            self.model,
            self.params,
            run.lr,
            run.freezer.lr_scales(),
            self.steps_per_epoch,
            self.amp,
            run.loss,
        )
        capped = self.optimisation.capped_warmup()
        if self.distributed.is_main and capped is not None:
            log.info(
                "%s: warm-up of %g epochs (train.warmup_epochs=%g, capped at half the run)",
                run.name,
                capped,
                self.params.warmup_epochs,
            )
        self.forward_model = self._wrap(self.model)
        # a loss this far above the uniform guess's log(classes) means the run has blown up
        self.diverged_loss = DIVERGED_LOSS_FACTOR * math.log(len(run.data.classes))

    def _batches(self) -> DeviceBatches | DataLoader:
        dataset = AugmentedImages.for_params(
            torch.from_numpy(self.run.data.train.images),
            torch.from_numpy(self.run.data.train.labels),
            self.params.augment,
            self.run.seed,
        )
        per_sample = dataset.transform is not None
        workers = loader_workers(self.params.workers, per_sample)
        if self.distributed.is_main:
            log.info(
                "%s: %s, device %s, bf16 autocast %s, channels_last %s",
                self.run.name,
                f"{workers} DataLoader worker(s) (train.workers={self.params.workers}; "
                f"{available_cpus()} CPUs available)"
                if per_sample
                else "batches cropped and flipped on the device (no per-sample augmentation)",
                self.device,
                "on" if self.amp else "off",
                "on" if self.channels_last else "off",
            )
        return training_batches(dataset, self.local_batch, self.sampler, workers, self.device)

    def _wrap(self, model: nn.Module) -> nn.Module:
        """DDP (rebuilt when the trainable set changes) and optional torch.compile."""
        if self.distributed.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        if self.params.compile and self.device.type == "cuda":
            model = torch.compile(model)
        return model

    def train_step(
        self, images: torch.Tensor, targets: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimisation step on a uint8 batch, CutMix/MixUp applied (and a student's
        teacher asked about the result): (loss, logits, targets), detached, on the device.
        ``step`` counts from the start of the run."""
        targets = targets.to(self.device, non_blocking=True)
        # mixed at the images' own size, so that a teacher sees the very batch the model does
        pixels, mixed = self.mixer(self.device_input.pixels(images), targets)
        teacher = self.run.teacher
        loss, logits = self.optimisation.step(
            self.forward_model,
            self.device_input.prepare(pixels),
            mixed,
            step,
            teacher.logits(pixels) if teacher is not None else None,
        )
        return loss, logits, targets

    def train_epoch(self, epoch: int) -> tuple[dict[str, float], float]:
        """One epoch's training metrics, and the seconds it took."""
        torch.manual_seed(self.run.seed * 100_003 + epoch)  # mixing, dropout, drop-path
        if self.run.freezer.apply(epoch) and self.distributed.world_size > 1:
            self.forward_model = self._wrap(self.model)
        self.model.train()
        freeze_batchnorm_stats(self.model)
        self.sampler.set_epoch(epoch)
        losses = LaggedLosses(lambda value, loss: self._check_loss(value, loss, epoch))
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        started = time.perf_counter()
        bar = tqdm(
            self.batches,
            total=self.steps_per_epoch,
            desc=f"{self.run.name} epoch {epoch + 1}/{self.params.epochs}",
            disable=None if self.distributed.is_main else True,  # None: off when not a TTY
            leave=False,
        )
        lr = self.optimisation.current_lr()
        for step, (images, targets) in enumerate(bar, start=epoch * self.steps_per_epoch):
            # the rate this step trains at (the scheduler moves it after)
            lr = self.optimisation.current_lr()
            loss, logits, targets = self.train_step(images, targets, step)
            correct += (logits.argmax(1) == targets).sum()
            if losses.add(StepLoss(loss, len(targets), step, lr)):
                bar.set_postfix(loss=f"{losses.mean:.4f}")
        loss_mean, seen = losses.finish(), losses.seen
        accuracy = int(correct) / seen  # waits for the epoch's last step
        seconds = time.perf_counter() - started
        _total, trainable = count_parameters(self.model)
        metrics = {
            "train/loss": loss_mean,
            "train/accuracy": accuracy,
            "train/lr": lr,  # of the epoch's last step
            "train/trainable_params": trainable,
            "train/images_per_second": seen * self.distributed.world_size / seconds,
        }
        return metrics, seconds

    def _check_loss(self, value: float, loss: StepLoss, epoch: int) -> None:
        """Stops a run whose loss became non-finite or exploded, naming its step."""
        if not math.isfinite(value) or value > self.diverged_loss:
            raise TrainingDiverged(
                f"models.{self.run.name}: training diverged in epoch {epoch + 1}, step "
                f"{loss.step + 1} (loss {value:.3g}; no better than guessing is "
                f"{math.log(len(self.run.data.classes)):.2f}): the learning rate "
                f"({loss.lr:.3g}) is the likely cause; lower train.lr or "
                f"models.{self.run.name}.lr_scale. No model was written"
            )

    def val_metrics(self) -> dict[str, float]:
        """Loss, accuracy and F1 on the validation split (the EMA weights when EMA is on)."""
        val = self.run.data.val
        logits = predict_logits(
            self.optimisation.evaluation_model(),
            val.images,
            self.device_input,
            self.params.batch_size,
            self.amp,
        )
        metrics = classification_metrics(logits, val.labels)
        return {f"val/{key}": value for key, value in metrics.items()}

    def fit(self) -> TrainResult:
        run, params = self.run, self.params
        state = load_resume_state(run.state_path, run.fingerprint)
        stopping = EarlyStopping(params.patience)
        history: list[dict[str, float]] = []
        start_epoch, seconds = 0, 0.0
        if state is not None:
            history, start_epoch, seconds = restore(state, self.model, self.optimisation, stopping)
            if self.distributed.is_main:
                for metrics in history:
                    run.log_epoch(metrics)
        stopped_early, pruned = stopping.should_stop, False
        finished = start_epoch  # epochs the resume state holds
        try:
            for epoch in range(start_epoch, params.epochs):
                if stopped_early or pruned:
                    break
                metrics, epoch_seconds = self._train_and_validate(epoch)
                seconds += epoch_seconds
                history.append(metrics)
                improved = stopping.update(
                    epoch, metrics["val/loss"], self.optimisation.evaluation_model()
                )
                stopped_early = self.distributed.broadcast_flag(stopping.should_stop)
                if self.distributed.is_main:
                    self._record_epoch(epoch, metrics, improved, stopping, history, seconds)
                finished = epoch + 1
                pruned = self.distributed.broadcast_flag(
                    self.distributed.is_main and run.should_stop(epoch, metrics)
                )
                if stopped_early and self.distributed.is_main:
                    log.info(
                        "%s: early stop, val loss has not improved for %d epochs",
                        run.name,
                        stopping.bad_epochs,
                    )
                if pruned and self.distributed.is_main:
                    log.info("%s: pruned after epoch %d", run.name, epoch + 1)
        except KeyboardInterrupt as interrupt:
            # anywhere in the loop, between epochs too: a signal does not wait for a good moment
            raise self._interrupted(finished) from interrupt
        return TrainResult(
            stopping.best_weights, stopping.best_epoch, history, stopped_early, pruned, seconds
        )

    def _record_epoch(
        self,
        epoch: int,
        metrics: dict[str, float],
        improved: bool,
        stopping: EarlyStopping,
        history: list[dict[str, float]],
        seconds: float,
    ) -> None:
        """The main process's end of an epoch: its metrics logged, the resume state saved."""
        self.run.log_epoch(metrics)
        self._log(epoch, metrics, improved)
        state = resume_state(
            self.run.fingerprint,
            epoch + 1,
            self.model,
            self.optimisation,
            stopping,
            history,
            seconds,
        )
        save_resume_state(self.run.state_path, state)

    def _interrupted(self, finished: int) -> TrainingInterrupted:
        """Ctrl-C or SIGTERM after ``finished`` epochs: one line saying what a re-run does (the
        resume state holds every finished epoch)."""
        resume = "resume from its last finished epoch" if finished else "start again"
        return TrainingInterrupted(
            f"{self.run.name}: interrupted in epoch {min(finished + 1, self.params.epochs)} of "
            f"{self.params.epochs}; run the same command to {resume}"
        )

    def _train_and_validate(self, epoch: int) -> tuple[dict[str, float], float]:
        """One epoch's training and validation metrics and its training seconds; a diverged
        run ends here with one line saying what to do."""
        metrics, seconds = self.train_epoch(epoch)
        metrics.update(self.val_metrics())
        if not math.isfinite(metrics["val/loss"]):
            raise TrainingDiverged(
                f"models.{self.run.name}: validation loss {metrics['val/loss']} after epoch "
                f"{epoch + 1}: the learning rate ({metrics['train/lr']:.3g}) is the likely "
                "cause; lower it. No model was written"
            )
        return metrics, seconds

    def _log(self, epoch: int, metrics: dict[str, float], improved: bool) -> None:
        log.info(
            "%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f f1 %.4f | "
            "lr %.2e | %d trainable | %.0f img/s%s",
            self.run.name,
            epoch + 1,
            self.params.epochs,
            metrics["train/loss"],
            metrics["train/accuracy"],
            metrics["val/loss"],
            metrics["val/accuracy"],
            metrics["val/f1_weighted"],
            metrics["train/lr"],
            metrics["train/trainable_params"],
            metrics["train/images_per_second"],
            " *best*" if improved else "",
        )
