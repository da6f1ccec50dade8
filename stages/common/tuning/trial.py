"""The link from a train stage running as a sweep trial back to its Optuna trial.

The sweep (stages/sweep.py) runs each trial as a DVC experiment and passes the study's storage,
name and trial id in the environment; the train stage reports each epoch's objective to that
trial and stops when Optuna's pruner says so. Outside a sweep there is no reporter.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.config.tuning import TuneParams
from stages.common.plumbing.output_paths import (
    METRICS_DIR,
    PREPARE_METRICS,
    VALIDATE_METRICS,
    paths,
)
from stages.common.tuning.storage import storage_from_url

log = logging.getLogger(__name__)

ENV_STORAGE = "CIFAR10_SWEEP_STORAGE"
ENV_STUDY = "CIFAR10_SWEEP_STUDY"
ENV_TRIAL = "CIFAR10_SWEEP_TRIAL_ID"
ENV_OBJECTIVE = "CIFAR10_SWEEP_OBJECTIVE"
DVC_TEMP_EXPERIMENTS = ".dvc/tmp/exps/"  # where `dvc exp run --temp` runs a trial


def epoch_metric(objective: str) -> str:
    """The per-epoch metric the trainer logs for a tune.objective: val_loss -> val/loss."""
    return objective.replace("val_", "val/", 1)


def direction(objective: str) -> str:
    """What Optuna does with a tune.objective: a loss is minimised, a score maximised."""
    return "minimize" if objective.endswith("loss") else "maximize"


def result_key(objective: str) -> str:
    """The key of a trial's metrics/train/<model>.json holding its result: best_val_loss."""
    return f"best_{objective}"


@dataclass
class TrialReporter:
    trial: Any  # optuna.trial.Trial
    metric: str

    def should_stop(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Report this epoch's objective; True when the pruner stops the trial."""
        self.trial.report(metrics[self.metric], epoch)
        if self.trial.should_prune():
            log.info("the sweep's pruner stops this trial after epoch %d", epoch + 1)
            return True
        return False


def make_pruner(tune: TuneParams, epochs: int):
    """The pruner `tune` asks for. Optuna does not store it with the study, so the sweep and
    each trial's train stage (which asks `should_prune`) build it from the same params."""
    import optuna

    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials)
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


def trial_reporter(tune: TuneParams, epochs: int) -> TrialReporter | None:
    """The reporter of the sweep trial this process runs, or None outside a sweep."""
    if ENV_TRIAL not in os.environ:
        return None
    import optuna

    storage = storage_from_url(os.environ[ENV_STORAGE])
    study = optuna.load_study(
        study_name=os.environ[ENV_STUDY], storage=storage, pruner=make_pruner(tune, epochs)
    )
    trial = optuna.trial.Trial(study, int(os.environ[ENV_TRIAL]))
    metric = epoch_metric(os.environ[ENV_OBJECTIVE])
    return TrialReporter(trial, metric)


def drop_inherited_metrics(model: str) -> list[Path]:
    """Delete, in a trial's temporary copy of the repository, the headline metrics it
    inherited from its parent commit and did not produce: the evaluation and comparison of the
    parent's models, the other models' training. DVC commits the whole copy as the trial's
    experiment, so `dvc exp show` would list the parent's numbers in the trial's row as if
    they were the trial's. The data's metrics (prepare, validate) stay: the trial used that
    data. Outside DVC's temporary copies this does nothing. Returns what it deleted."""
    if DVC_TEMP_EXPERIMENTS not in Path.cwd().resolve().as_posix() + "/":
        return []
    keep = {PREPARE_METRICS, VALIDATE_METRICS, paths(model).train_metrics}
    stale = [path for path in sorted(METRICS_DIR.rglob("*.json")) if path not in keep]
    for path in stale:
        path.unlink()
    if stale:
        log.info("left out of this trial's experiment: %s", ", ".join(map(str, stale)))
    return stale
