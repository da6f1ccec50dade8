"""train <model>: fine-tune ``models.<model>`` on the prepared data, log with DVCLive.

Outputs: ``models/<model>/model.pt`` (the best checkpoint by validation loss, with what is
needed to rebuild it) and ``dvclive/<model>/`` (per-epoch metrics and plots). Runs under
``torchrun --nproc_per_node N -m stages.train <model>`` too: only rank 0 logs and writes.
"""

from __future__ import annotations

import argparse
import logging
import shutil

import torch

from stages.common.checkpoint import fingerprint, save_torch
from stages.common.cli import run_stage
from stages.common.dataset import MANIFEST_FILE, load_prepared
from stages.common.engine import Distributed, Trainer, TrainRun
from stages.common.errors import DataError
from stages.common.freezing import Freezer
from stages.common.io import read_json
from stages.common.layout import live_dir, model_file, resume_file
from stages.common.models import build_model, count_parameters
from stages.common.params import Params

log = logging.getLogger("train")


def train(params: Params, name: str) -> None:
    distributed = Distributed.from_env()
    train_params = params.model_train_params(name)
    spec = params.models[name]
    data = load_prepared()
    torch.manual_seed(params.seed)  # the new head's initial weights
    model, preprocessing = build_model(name, spec, len(data.classes))
    freezer = Freezer(model, spec.freezing, f"models.{name}.freezing")
    manifest = read_json(MANIFEST_FILE)
    settings = {
        "model": spec.model_dump(),
        "train": train_params.model_dump(),
        "seed": params.seed,
        "data": manifest["content_sha256"],
        "world_size": distributed.world_size,
    }
    live = open_live(name) if distributed.is_main else None
    run = TrainRun(
        name=name,
        params=train_params,
        model=model,
        preprocessing=preprocessing,
        freezer=freezer,
        data=data,
        seed=params.seed,
        state_path=resume_file(name),
        fingerprint=fingerprint(settings),
        log_epoch=lambda metrics: log_to_live(live, metrics),
        distributed=distributed,
    )
    result = Trainer(run).fit()
    if not distributed.is_main:
        return
    if result.best_state is None:
        raise DataError(f"models.{name}: training produced no checkpoint (no epoch ran)")
    total, _ = count_parameters(model)
    best = result.history[result.best_epoch]
    checkpoint = {
        "arch": spec.arch,
        "state_dict": result.best_state,
        "classes": data.classes,
        "preprocessing": preprocessing.as_dict(),
        "data_sha256": manifest["content_sha256"],
        "best_epoch": result.best_epoch,
        "params": {"model": spec.model_dump(), "train": train_params.model_dump()},
    }
    saved_model = model_file(name)
    save_torch(saved_model, checkpoint)
    summary = {
        "best_epoch": result.best_epoch + 1,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "best_val_loss": best["val/loss"],
        "best_val_accuracy": best["val/accuracy"],
        "best_val_f1_weighted": best["val/f1_weighted"],
        "parameters": total,
        "trainable_parameters_final": int(result.history[-1]["train/trainable_params"]),
        "train_seconds": result.train_seconds,
    }
    live.summary.update(summary)
    live.log_artifact(
        str(saved_model),
        type="model",
        name=f"cifar10-{name}",
        desc=f"{spec.arch} fine-tuned on CIFAR-10 (best val loss, epoch {summary['best_epoch']})",
        labels=["cifar10", name],
        cache=False,
    )
    live.end()
    shutil.rmtree(resume_file(name).parent, ignore_errors=True)
    log.info(
        "%s: best epoch %d, val loss %.4f, val accuracy %.4f -> %s",
        name,
        summary["best_epoch"],
        summary["best_val_loss"],
        summary["best_val_accuracy"],
        saved_model,
    )


def open_live(name: str):
    from dvclive import Live

    directory = live_dir(name)
    shutil.rmtree(directory, ignore_errors=True)  # a resumed run replays its history
    return Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)


def log_to_live(live, metrics: dict[str, float]) -> None:
    for key, value in metrics.items():
        live.log_metric(key, value)
    live.next_step()


def main(params: Params) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a key of `models` in params.yaml")
    args = parser.parse_args()
    try:
        train(params, args.model)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_stage(main)
