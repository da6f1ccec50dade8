"""One model's training as a stage runs it: train@<model> and distill@<student> alike.

Builds the model, runs the engine (stages/common/training/trainer.py) with DVCLive on rank 0,
and writes what the stage outputs: ``models/<name>/model.safetensors`` (the best epoch by
validation loss, with what is needed to rebuild it), ``dvclive/<name>/`` (per-epoch curves) and
``metrics/train/<name>.json`` (the headline numbers). A student differs in two things: a teacher
answers for each batch and the loss mixes its answers with the labels, and its name is its own
(``distill.<name>``) while its net and recipe are those of ``models.<student>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stages.common.config.training import DistillParams, ModelParams, TrainParams, learning_rate
from stages.common.data.prepared import PreparedData, load_prepared
from stages.common.models.checkpoint import CheckpointInfo, ModelCheckpoint
from stages.common.models.factory import build_model, count_parameters
from stages.common.models.inference import load_model
from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import read_json, writable, write_json
from stages.common.plumbing.machine import Distributed, use_amp
from stages.common.plumbing.output_paths import MANIFEST_FILE, ModelPaths, paths
from stages.common.training.distillation import Teacher, TrainingLoss
from stages.common.training.freezing import Freezer
from stages.common.training.resume import fingerprint
from stages.common.training.trainer import Trainer, TrainResult, TrainRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distillation:
    """What makes a training a student's: its entry of ``distill`` and its teacher's file."""

    params: DistillParams
    teacher_checkpoint: Path

    def teacher(self, device: torch.device, amp: bool, classes: list[str]) -> Teacher:
        """The trained teacher on ``device``; one line when it is missing or does not fit."""
        path = self.trained_teacher()
        loaded = load_model(path, device)
        if loaded.classes != classes:
            raise DataError(
                f"{path}: the teacher was trained for classes {loaded.classes}, the prepared "
                f"data has {classes}"
            )
        return Teacher(loaded, amp)

    def trained_teacher(self) -> Path:
        """The teacher's checkpoint; one line when it has not been trained."""
        path = self.teacher_checkpoint
        if not path.is_file():
            raise DataError(
                f"{path}: the teacher models.{self.params.teacher} is not trained; run "
                f"`dvc repro train@{self.params.teacher}` first"
            )
        return path

    def loss(self, label_smoothing: float) -> TrainingLoss:
        return TrainingLoss(label_smoothing, self.params.temperature, self.params.alpha)

    def recorded(self) -> dict[str, Any]:
        """The distill entry and the teacher's file hash: part of the student's params (a
        retrained teacher is another run, not a resumable one)."""
        digest = hashlib.sha256(self.trained_teacher().read_bytes()).hexdigest()
        return {**self.params.model_dump(), "teacher_sha256": digest}


@dataclass
class ModelTraining:
    """One model's training: ``spec``'s net trained with ``train_params`` from ``seed``,
    saved under ``name``; a student when ``distillation`` is given. ``module`` is the stage's
    (its code is part of the resume fingerprint)."""

    name: str
    spec: ModelParams
    train_params: TrainParams
    seed: int
    module: str
    distillation: Distillation | None = None

    def run(
        self, should_stop: Callable[[int, dict[str, float]], bool] = TrainRun.should_stop
    ) -> tuple[dict[str, Any], TrainResult] | None:
        """Train and write the outputs; the headline numbers and the result on rank 0, None
        on the others (only rank 0 writes)."""
        distributed = Distributed.from_env()
        lr = learning_rate(self.train_params, self.spec)
        effective = self.effective(lr)  # a student without a trained teacher stops here
        where = paths(self.name)
        refuse_unwritable(where)
        data = load_prepared()
        torch.manual_seed(self.seed)  # model creation draws from the global generator
        model, preprocessing = build_model(self.spec_key, self.spec, len(data.classes))
        self.log_recipe(lr)
        data_hash = read_json(MANIFEST_FILE)["content_sha256"]
        shapes_the_run = {
            **effective,
            "seed": self.seed,
            "data": data_hash,
            "world": distributed.world_size,
        }
        # DVCLive on rank 0 only; its `with` ends it (the summary written) however training ends
        is_main = distributed.is_main
        with open_live(self.name, effective) if is_main else contextlib.nullcontext() as live:
            run = TrainRun(
                name=self.name,
                params=self.train_params,
                lr=lr,
                model=model,
                preprocessing=preprocessing,
                freezer=Freezer(model, self.spec.freezing, f"models.{self.spec_key}.freezing"),
                data=data,
                seed=self.seed,
                state_path=where.resume_state,
                fingerprint=fingerprint(shapes_the_run, self.module),
                log_epoch=lambda metrics: log_to_live(live, metrics),
                should_stop=should_stop,
                distributed=distributed,
                **self.teaching(distributed.device(), data),
            )
            result = Trainer(run).fit()
            if live is None:  # not rank 0: only rank 0 writes
                return None
            info = CheckpointInfo(
                name=self.name,
                arch=self.spec.arch,
                classes=data.classes,
                preprocessing=preprocessing,
                data_sha256=data_hash,
                best_epoch=result.best_epoch + 1,
                params=effective,
            )
            headline = save_model(info, result, count_parameters(model)[0], where.checkpoint)
            ending = {"epochs_run": len(result.history), "stopped_early": result.stopped_early}
            live.summary.update({**headline, **ending})
        write_json(where.train_metrics, headline)
        return headline, result

    def effective(self, lr: float) -> dict[str, Any]:
        """The values this model trains with, as its checkpoint and DVCLive record them: a
        student's distill entry and its teacher's file hash too."""
        effective = {"model": self.spec.model_dump(), "train": self.train_params.model_dump()}
        effective["lr"] = lr
        if self.distillation is not None:
            effective["distill"] = self.distillation.recorded()
        return effective

    @property
    def spec_key(self) -> str:
        """The `models` key of the net: a student's is its distill entry's `student`."""
        return self.distillation.params.student if self.distillation else self.name

    def teaching(self, device: torch.device, data: PreparedData) -> dict[str, Any]:
        """A student's TrainRun fields: its teacher (none at alpha 0) and its loss."""
        if self.distillation is None:
            return {}
        distillation, train = self.distillation, self.train_params
        amp = use_amp(train.amp, device)
        wanted = distillation.params.alpha > 0
        teacher = distillation.teacher(device, amp, data.classes) if wanted else None
        return {"teacher": teacher, "loss": distillation.loss(train.label_smoothing)}

    def log_recipe(self, lr: float) -> None:
        train = self.train_params
        taught = ""
        if self.distillation is not None:
            entry = self.distillation.params
            taught = (
                f", taught by {entry.teacher} (T {entry.temperature:g}, alpha {entry.alpha:g};"
                f" the net and recipe of models.{entry.student})"
            )
        log.info(
            "%s: %s, lr %.3g (train.lr %.3g x lr_scale %g), %s, batch %d, %d epochs%s",
            self.name,
            self.spec.arch,
            lr,
            train.lr,
            self.spec.lr_scale,
            train.optimizer,
            train.batch_size,
            train.epochs,
            taught,
        )


def finished(name: str, headline: dict[str, Any], pruned: bool = False) -> None:
    """Delete the resumable state (the run is complete) and say what came out."""
    where = paths(name)
    shutil.rmtree(where.resume_dir, ignore_errors=True)
    log.info(
        "%s: best epoch %d, val loss %.4f, val accuracy %.4f -> %s%s",
        name,
        headline["best_epoch"],
        headline["best_val_loss"],
        headline["best_val_accuracy"],
        where.checkpoint,
        " (pruned)" if pruned else "",
    )


def refuse_unwritable(where: ModelPaths) -> None:
    """Stop before training when an output cannot be written (found now, not after every
    epoch has run)."""
    outputs = [where.checkpoint, where.train_metrics, where.live_dir / "metrics.json"]
    for output in [*outputs, where.resume_state]:
        if problem := writable(output):
            raise DataError(f"{output}: cannot write it ({problem}); nothing was trained")


def save_model(
    info: CheckpointInfo, result: TrainResult, parameters: int, path: Path
) -> dict[str, Any]:
    """The best epoch's weights as models/<name>/model.safetensors; its headline numbers."""
    if result.best_state is None:
        raise DataError(f"models.{info.name}: training produced no checkpoint (no epoch ran)")
    ModelCheckpoint(info, result.best_state).save(path)
    return summarise(result, parameters)


def summarise(result: TrainResult, parameters: int) -> dict[str, Any]:
    """The numbers worth comparing across experiments (metrics/train/<model>.json): the best
    epoch's validation scores (a sweep's objective among them), the time, the size. The scores
    of every epoch are DVCLive's (dvclive/<model>/)."""
    best = result.history[result.best_epoch]
    return {
        "best_epoch": result.best_epoch + 1,
        "best_val_loss": best["val/loss"],
        "best_val_accuracy": best["val/accuracy"],
        "best_val_f1_weighted": best["val/f1_weighted"],
        "train_minutes": result.train_seconds / 60,
        "pruned": result.pruned,
        "parameters": parameters,
        "trainable_parameters": int(result.history[-1]["train/trainable_params"]),
    }


def open_live(name: str, effective: dict[str, Any]):
    from dvclive import Live

    directory = paths(name).live_dir
    shutil.rmtree(directory, ignore_errors=True)  # a resumed run replays its history
    live = Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)
    live.step = 1  # the curves' steps are epochs, counted from 1 as the logs count them
    live.log_params(effective)  # the values this model actually trained with
    return live


def log_to_live(live, metrics: dict[str, float]) -> None:
    for key, value in metrics.items():
        live.log_metric(key, value)
    live.next_step()
