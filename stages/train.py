"""train <model>: fine-tune ``models.<model>`` on the prepared data, log with DVCLive.

Outputs: ``models/<model>/model.safetensors`` (the best epoch by validation loss, with what is
needed to rebuild it), ``metrics/train/<model>.json`` (the headline numbers) and
``dvclive/<model>/`` (per-epoch curves). Runs under ``torchrun --nproc_per_node N -m
stages.train <model>`` too: only rank 0 logs and writes. Inside a sweep trial (see
stages/sweep.py) it reports each epoch's objective to Optuna, which may prune the run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from stages.common.config.training import (
    ModelParams,
    TrainParams,
    check_training,
    learning_rate,
    misplaced_training_key,
)
from stages.common.config.tuning import TuneParams
from stages.common.data.prepared import load_prepared
from stages.common.models.checkpoint import CheckpointInfo, ModelCheckpoint
from stages.common.models.factory import build_model, count_parameters
from stages.common.plumbing.command import run_stage
from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import read_json, writable, write_json
from stages.common.plumbing.machine import Distributed
from stages.common.plumbing.output_paths import MANIFEST_FILE, ModelPaths, paths
from stages.common.plumbing.param_types import Seed
from stages.common.plumbing.stage_params import NamedModels, StageParams, model_entry
from stages.common.training.freezing import Freezer
from stages.common.training.resume import fingerprint
from stages.common.training.trainer import Trainer, TrainResult, TrainRun
from stages.common.tuning.trial import drop_inherited_metrics, trial_reporter

log = logging.getLogger("train")


class TrainStageParams(StageParams):
    """`tune` is read inside a sweep's trial only (its pruner), so dvc.yaml does not list it."""

    seed: Seed
    train: TrainParams
    models: NamedModels[ModelParams]
    tune: TuneParams

    def check(self) -> None:
        check_training(self.train, self.models)

    @classmethod
    def explain(cls, error: ValidationError) -> str:
        return misplaced_training_key(error, cls) or super().explain(error)


def train(params: TrainStageParams, name: str) -> None:
    distributed = Distributed.from_env()
    spec = model_entry(params.models, name)
    lr = learning_rate(params.train, spec)
    where = paths(name)
    refuse_unwritable(where)
    data = load_prepared()
    torch.manual_seed(params.seed)  # model creation draws from the global generator
    model, preprocessing = build_model(name, spec, len(data.classes))
    effective = {"model": spec.model_dump(), "train": params.train.model_dump(), "lr": lr}
    log_recipe(name, spec, params.train, lr)
    reporter = trial_reporter(params.tune, params.train.epochs)
    data_hash = read_json(MANIFEST_FILE)["content_sha256"]
    shapes_the_run = {
        **effective,
        "seed": params.seed,
        "data": data_hash,
        "world": distributed.world_size,
    }
    # DVCLive on rank 0 only; its `with` ends it (the summary written) however training ends
    with open_live(name, effective) if distributed.is_main else contextlib.nullcontext() as live:
        run = TrainRun(
            name=name,
            params=params.train,
            lr=lr,
            model=model,
            preprocessing=preprocessing,
            freezer=Freezer(model, spec.freezing, f"models.{name}.freezing"),
            data=data,
            seed=params.seed,
            state_path=where.resume_state,
            fingerprint=fingerprint(shapes_the_run),
            log_epoch=lambda metrics: log_to_live(live, metrics),
            should_stop=reporter.should_stop if reporter else TrainRun.should_stop,
            distributed=distributed,
        )
        result = Trainer(run).fit()
        if live is None:  # not rank 0: only rank 0 writes
            return
        info = CheckpointInfo(
            name=name,
            arch=spec.arch,
            classes=data.classes,
            preprocessing=preprocessing,
            data_sha256=data_hash,
            best_epoch=result.best_epoch + 1,
            params=effective,
        )
        headline = save_model(info, result, count_parameters(model)[0], where.checkpoint)
        live.summary.update(
            {**headline, "epochs_run": len(result.history), "stopped_early": result.stopped_early}
        )
    finish(name, headline, in_trial=reporter is not None, pruned=result.pruned)


def finish(name: str, headline: dict[str, Any], in_trial: bool, pruned: bool) -> None:
    """Write the headline numbers, drop what a sweep trial inherited, delete the resumable
    state (the run is complete) and say what came out."""
    where = paths(name)
    write_json(where.train_metrics, headline)
    if in_trial:
        drop_inherited_metrics(name)
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


def log_recipe(name: str, spec: ModelParams, train_params: TrainParams, lr: float) -> None:
    log.info(
        "%s: %s, lr %.3g (train.lr %.3g x lr_scale %g), %s, batch %d, %d epochs",
        name,
        spec.arch,
        lr,
        train_params.lr,
        spec.lr_scale,
        train_params.optimizer,
        train_params.batch_size,
        train_params.epochs,
    )


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


def main(params: TrainStageParams) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a key of `models` in params.yaml")
    args = parser.parse_args()
    try:
        train(params, args.model)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_stage(main, TrainStageParams)
