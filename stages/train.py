"""train <model>: fine-tune ``models.<model>`` on the prepared data, log with DVCLive.

Outputs: ``models/<model>/model.safetensors`` (the best epoch by validation loss, with what is
needed to rebuild it), ``metrics/train/<model>.json`` (the headline numbers) and
``dvclive/<model>/`` (per-epoch curves). Runs under ``torchrun --nproc_per_node N -m
stages.train <model>`` too: only rank 0 logs and writes. Inside a sweep trial (see
stages/sweep.py) it reports each epoch's objective to Optuna, which may prune the run.
"""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from stages.common.config.training import (
    ModelParams,
    TrainParams,
    check_training,
    misplaced_training_key,
    model_training,
)
from stages.common.config.tuning import TuneParams
from stages.common.plumbing.command import run_stage
from stages.common.plumbing.machine import process_group_closed
from stages.common.plumbing.param_types import Seed
from stages.common.plumbing.stage_params import NamedModels, StageParams, model_entry
from stages.common.training.model_training import ModelTraining, finished
from stages.common.training.trainer import TrainRun
from stages.common.tuning.trial import drop_inherited_metrics, trial_reporter


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
    spec = model_entry(params.models, name)
    train_params = model_training(params.train, spec)
    reporter = trial_reporter(params.tune, train_params.epochs)
    training = ModelTraining(name, spec, train_params, params.seed, module="stages.train")
    outcome = training.run(reporter.should_stop if reporter else TrainRun.should_stop)
    if outcome is None:  # not rank 0
        return
    headline, result = outcome
    if reporter is not None:
        drop_inherited_metrics(name)
    finished(name, headline, pruned=result.pruned)


def main(params: TrainStageParams) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a key of `models` in params.yaml")
    args = parser.parse_args()
    with process_group_closed():
        train(params, args.model)


if __name__ == "__main__":
    run_stage(main, TrainStageParams)
