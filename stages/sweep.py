"""sweep <model>: an Optuna study over `tune.space` whose trials are DVC experiments.

    python -m stages.sweep resnet [--epochs 5] [--trials 20] [-S key=value ...]
    bash run.sh 5 resnet sweep                      # the same through run.sh

Each trial is `dvc exp run --temp -n <study>-t<NNN> -S <its params> train@<model>`: it shows in
`dvc exp show`, `dvc plots diff` overlays trials, and `dvc exp apply` brings one back. The
train stage reports each epoch's objective to the trial, so Optuna's pruner stops bad trials
early; a pruned trial is still a DVC experiment (its metrics say `pruned: true`).

The study lives in Optuna storage: by default an SQLite file .dvc/tmp/studies/<study>.db with
heartbeats, so a killed sweep started again fails the interrupted trial and retries its params
(no trial lost, none counted twice), and several processes on this machine can share it. For
several machines, give an RDB URL (PostgreSQL, MySQL) in tune.storage or $SWEEP_STORAGE.
Results: sweeps/<study>/best.json, summary.md and Optuna's plots as PNGs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from stages.common.config.overrides import with_overrides
from stages.common.plumbing.command import run_command
from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.output_paths import STUDIES_DIR
from stages.common.reporting.sweep_summary import write_results
from stages.common.tuning.storage import absolute_sqlite
from stages.common.tuning.study import check_failures, run_study
from stages.common.tuning.sweep import Sweep, refuse_overridden_space

log = logging.getLogger("sweep")
ENV_STORAGE_OVERRIDE = "SWEEP_STORAGE"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a key of `models` in params.yaml")
    parser.add_argument("--epochs", type=int, help="epochs per trial (default: tune.epochs)")
    parser.add_argument("--trials", type=int, help="trials in the study (default: tune.trials)")
    parser.add_argument("-S", "--set-param", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    _text, raw, params = with_overrides(args.overrides)
    params.model(args.model)
    tune = params.tune
    if args.trials is not None:
        if args.trials < 1:
            raise ParamsError(f"--trials: must be >= 1, got {args.trials}")
        tune = tune.model_copy(update={"trials": args.trials})
        params = params.model_copy(update={"tune": tune})
    refuse_overridden_space(params, args.model)
    epochs = tune.trial_epochs(args.epochs, params.training(args.model).epochs)
    if epochs < 1:
        raise ParamsError(f"--epochs: must be >= 1, got {epochs}")
    study_name = tune.study or f"sweep-{args.model}"
    default_url = f"sqlite:///{(STUDIES_DIR / f'{study_name}.db').as_posix()}"
    (STUDIES_DIR).mkdir(parents=True, exist_ok=True)
    storage_url = absolute_sqlite(
        os.environ.get(ENV_STORAGE_OVERRIDE) or tune.storage or default_url
    )
    sweep = Sweep(params, raw, args.model, study_name, storage_url, epochs, args.overrides)
    run_sweep(sweep)


def run_sweep(sweep: Sweep) -> None:
    study = run_study(sweep)
    write_results(sweep, study)
    check_failures(sweep)
    log.info("results: %s", sweep.folder / "summary.md")
    best_file = sweep.folder / "best.json"
    if best_file.is_file():
        best = json.loads(best_file.read_text())
        log.info("best: trial %d (%s): %s", best["trial"], best["experiment"], best["value"])
        log.info("      %s", best["commands"]["apply"])
        log.info("      %s", best["commands"]["rerun"])


if __name__ == "__main__":
    run_command(main)
