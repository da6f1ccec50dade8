"""A sweep's study loop: each trial's params suggested, checked and run as a DVC experiment,
its objective read back from the experiment's commit, interrupted trials run again, a line per
finished trial. The stage (stages/sweep.py) opens it and writes the summary."""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from stages.common.config.params import parse_params, set_dotted
from stages.common.config.tuning import Distribution
from stages.common.plumbing.errors import ParamsError, StageError
from stages.common.plumbing.output_paths import paths
from stages.common.tuning.storage import open_storage, shown_url
from stages.common.tuning.sweep import Sweep, epochs_key, short_value
from stages.common.tuning.trial import (
    ENV_OBJECTIVE,
    ENV_STORAGE,
    ENV_STUDY,
    ENV_TRIAL,
    direction,
    make_pruner,
    result_key,
)

log = logging.getLogger("sweep")
FAILURES_IN_A_ROW = 3  # this many failed trials in a row stop the sweep: the cause is not chance
INTERRUPTED = "interrupted"  # a trial's user attribute: Ctrl-C or SIGTERM ended it
RETRY_OF = "retry_of"  # a queued trial's: the interrupted trial whose params it runs again
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class SweepError(StageError):
    """A trial's DVC experiment failed."""


def suggest(trial: Any, key: str, distribution: Distribution) -> Any:
    if distribution.type == "categorical":
        return trial.suggest_categorical(key, distribution.choices)
    low, high = float(distribution.low or 0), float(distribution.high or 0)  # checked: set
    if distribution.type == "int":
        step = int(distribution.step or 1)
        return trial.suggest_int(key, int(low), int(high), step=step, log=distribution.log)
    return trial.suggest_float(key, low, high, step=distribution.step, log=distribution.log)


def trial_overrides(sweep: Sweep, values: dict[str, Any]) -> list[str]:
    """The trial's -S arguments, checked like params.yaml (a combination the schema refuses,
    e.g. an odd batch with CutMix, fails the trial before DVC runs)."""
    raw = copy.deepcopy(sweep.raw)
    settings = {**values, epochs_key(sweep.params, sweep.model): sweep.epochs}
    for key, value in settings.items():
        set_dotted(raw, key, value)
    parse_params(raw)
    # the trial's own value of a key wins; the command line's is dropped, not said twice
    kept = [o for o in sweep.overrides if o.partition("=")[0].lstrip("+") not in settings]
    return [*kept, *(f"{key}={json.dumps(value)}" for key, value in settings.items())]


def run_trial(sweep: Sweep, trial: Any, overrides: list[str]) -> dict[str, Any]:
    """Run the trial's DVC experiment; its metrics/train/<model>.json (the objective is one
    of them, so `dvc exp show --sort-by` ranks the trials by it)."""
    name = sweep.experiment_name(trial.number)
    command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", name]
    for override in overrides:
        command += ["-S", override]
    command.append(f"train@{sweep.model}")
    environment = {
        **os.environ,
        ENV_STORAGE: sweep.storage_url,
        ENV_STUDY: sweep.study_name,
        # a Trial has no public id, and the train stage needs one to rebuild it
        # (optuna.trial.Trial(study, trial_id)) and report each epoch to it
        ENV_TRIAL: str(trial._trial_id),
        ENV_OBJECTIVE: sweep.params.tune.objective,
    }
    log_file = sweep.folder / f"{name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as handle:
        result = subprocess.run(command, env=environment, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log_file.read_text().strip().splitlines()[-1:] or ["no output"]
        raise SweepError(f"trial {trial.number}: `dvc exp run` failed ({tail[0]}); see {log_file}")
    return experiment_file(name, paths(sweep.model).train_metrics)


def experiment_file(name: str, metrics_file: Path) -> dict[str, Any]:
    """A file of experiment ``name``'s commit (metrics are git-tracked, so git has them)."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ref = next((ref for ref in refs if ref.rsplit("/", 1)[-1] == name), None)
    if ref is None:
        raise SweepError(f"experiment {name}: not found after `dvc exp run`")
    shown = subprocess.run(
        ["git", "show", f"{ref}:{metrics_file.as_posix()}"], capture_output=True, text=True
    )
    if shown.returncode != 0:
        raise SweepError(f"experiment {name}: no {metrics_file} in its commit")
    return json.loads(shown.stdout)


def objective_function(sweep: Sweep):

    tune = sweep.params.tune
    objective_key = result_key(tune.objective)
    budget = tune.trials

    def objective(trial: optuna.Trial) -> float:
        values = {key: suggest(trial, key, d) for key, d in tune.space.items()}
        shown = ", ".join(f"{key}={short_value(value)}" for key, value in values.items())
        done = len(trial.study.get_trials(deepcopy=False, states=FINISHED))
        retry = trial.user_attrs.get(RETRY_OF)
        again = f", again the interrupted trial {retry + 1}'s" if retry is not None else ""
        log.info("trial %d (%d of %d done%s): %s", trial.number + 1, done, budget, again, shown)
        overrides = trial_overrides(sweep, values)
        trial.set_user_attr("experiment", sweep.experiment_name(trial.number))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("overrides", overrides)
        try:
            metrics = run_trial(sweep, trial, overrides)
        except KeyboardInterrupt:  # Optuna fails the trial; the next start runs its params again
            trial.set_user_attr(INTERRUPTED, True)
            raise
        except SweepError as error:
            sweep.failures_in_a_row += 1
            sweep.last_failure = str(error)
            if sweep.failures_in_a_row >= FAILURES_IN_A_ROW:
                trial.study.stop()
            raise
        sweep.failures_in_a_row = 0
        value = float(metrics[objective_key])
        if metrics.get("pruned"):
            reported = next(
                t.intermediate_values
                for t in trial.study.get_trials(deepcopy=False)
                if t.number == trial.number
            )
            log.info("  pruned after epoch %d", len(reported))
            raise optuna.TrialPruned()
        return value

    return objective


def retry_interrupted(study: Any) -> None:
    """Queue the params of each trial Ctrl-C or SIGTERM ended, once (a killed process's trial
    is failed and queued by Optuna's heartbeat instead)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    for trial in trials:
        interrupted = trial.state == TrialState.FAIL and trial.user_attrs.get(INTERRUPTED)
        if interrupted and trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
            log.info("trial %d was interrupted: its params run again", trial.number + 1)


def report_trial(study: Any, trial: Any) -> None:
    """One line per finished trial: its value or fate, and the best so far."""

    if trial.state == optuna.trial.TrialState.COMPLETE:
        outcome = f"{study.direction.name.lower()}d objective {trial.value:.4f}"
    else:
        outcome = trial.state.name.lower()
    try:
        best = study.best_trial
        best_text = f"best so far {best.value:.4f} (trial {best.number + 1})"
    except ValueError:
        best_text = "no completed trial yet"
    log.info("  trial %d: %s; %s", trial.number + 1, outcome, best_text)


def open_study(sweep: Sweep):
    tune = sweep.params.tune
    study_direction = direction(tune.objective)
    storage = open_storage(sweep.storage_url)
    study = optuna.create_study(
        study_name=sweep.study_name, storage=storage, direction=study_direction, load_if_exists=True
    )
    # distinct random streams for processes joining a study that has trials already
    seed = sweep.params.seed + len(study.trials)
    if tune.sampler == "tpe":
        study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup_trials)
    else:
        study.sampler = optuna.samplers.RandomSampler(seed=seed)
    study.pruner = make_pruner(tune, sweep.epochs)
    return study


def run_study(sweep: Sweep) -> Any:
    """Run this process's share of the study's trials; the study, for its summary."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(sweep)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    tune = sweep.params.tune
    finished = FINISHED
    # a trial another worker is running counts against the budget too, or two workers would
    # each start "the last" trial; a killed worker's trial is failed first (its params queued)
    claimed = (*finished, TrialState.RUNNING)
    with warnings.catch_warnings():  # Optuna marks it experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    retry_interrupted(study)
    done = len(study.get_trials(deepcopy=False, states=finished))
    under_way = len(study.get_trials(deepcopy=False, states=claimed)) - done
    log.info(
        "study %s (%s): %d of %d trials done%s; %s, %s pruner, %d epochs per trial",
        sweep.study_name,
        shown_url(sweep.storage_url),
        done,
        tune.trials,
        f", {under_way} under way elsewhere" if under_way else "",
        tune.sampler,
        tune.pruner,
        sweep.epochs,
    )
    if done + under_way < tune.trials:
        study.optimize(
            objective_function(sweep),
            timeout=tune.timeout_minutes * 60 if tune.timeout_minutes else None,
            callbacks=[MaxTrialsCallback(tune.trials, states=claimed), report_trial],
            catch=(SweepError, ParamsError),
            gc_after_trial=True,
        )
    return study


def check_failures(sweep: Sweep) -> None:
    """Fail the stage when the sweep stopped because trials kept failing."""
    if sweep.failures_in_a_row >= FAILURES_IN_A_ROW:
        raise StageError(
            f"sweep stopped: {FAILURES_IN_A_ROW} trials in a row failed; the last: "
            f"{sweep.last_failure}"
        )
