"""preflight: what run.sh does before DVC starts: check, plan, estimate, and stop a run too
slow for this machine.

    python -m stages.preflight [-S key=value ...] [--model M] [--sweep] [--allow-slow]

1. The checks of stages.check_params (params.yaml with the overrides, every model buildable).
2. The plan: which stages will run, which DVC will skip (stages/common/plan.py).
3. The cost: a few real training steps of every model whose training will run, timed on the
   device it will use, scaled to the configured epochs (stages/common/estimate.py).
4. Without a GPU, an estimate over an hour stops here with one line naming the ways on,
   unless --allow-slow (or CIFAR10_ALLOW_SLOW=1) says to go ahead.
"""

from __future__ import annotations

import argparse
import logging
import os
import textwrap
import time

from stages.check_params import check
from stages.common.cli import run_command
from stages.common.errors import ParamsError
from stages.common.overrides import with_overrides
from stages.common.params import Params
from stages.common.plan import PlannedStage, plan_run
from stages.common.splitting import expected_split_sizes

log = logging.getLogger("preflight")
ALLOW_SLOW_ENV = "CIFAR10_ALLOW_SLOW"
SLOW_SECONDS = 3600  # without a GPU, a run estimated longer than this stops unless allowed


class TooSlowError(ParamsError):
    """The run would take hours on this machine; nothing has started."""


def print_plan(planned: list[PlannedStage]) -> None:
    groups = {
        "cached": [p.name for p in planned if p.action == "cached"],
        "restored from the run-cache": [p.name for p in planned if p.action == "restore"],
        "will run": [
            f"{p.name} ({p.reason})" if p.reason.startswith(("never", "changed")) else p.name
            for p in planned
            if p.action == "run"
        ],
    }
    print(f"plan ({len(planned)} stages):")
    for label, names in groups.items():
        if names:
            lines = textwrap.wrap(", ".join(names), 100 - 32, break_on_hyphens=False)
            for heading, line in zip([f"{label}:", *[""] * len(lines)], lines):
                print(f"  {heading:<29} {line}")


def models_to_train(planned: list[PlannedStage]) -> list[str]:
    return [
        p.name.split("@", 1)[1]
        for p in planned
        if p.name.startswith("train@") and p.action == "run"
    ]


def estimate(params: Params, names: list[str], trials: int) -> float:
    """Print each model's estimate and the total; return the total in seconds."""
    from stages.common.estimate import duration, estimate_model

    sizes = expected_split_sizes(params.data)
    if sizes is None:
        print("cost: not estimated (the training set's size is known once prepare has run)")
        return 0.0
    train_images, val_images = sizes
    epochs = params.train.epochs
    started = time.perf_counter()
    estimates = [estimate_model(params, name, train_images, val_images, epochs) for name in names]
    took = time.perf_counter() - started
    device = estimates[0].device
    print(f"estimated training time on this {device.upper()} (a few steps timed, {took:.0f} s):")
    for e in estimates:
        per_trial = f" per trial, x {trials} trials" if trials > 1 else ""
        print(
            f"  {e.name:<14} {e.arch} at {e.img_size} px, batch {params.train.batch_size}: "
            f"{duration(e.epoch_seconds)} per epoch, {duration(e.seconds)} for {epochs} "
            f"epoch{'s' if epochs != 1 else ''}{per_trial}"
        )
    total = sum(e.seconds for e in estimates) * trials
    print(f"  total: {duration(total)} ({train_images:,} training images per epoch)")
    if device == "cpu" and total > SLOW_SECONDS and os.environ.get(ALLOW_SLOW_ENV) != "1":
        raise TooSlowError(
            f"about {duration(total)} of training on this CPU (no GPU found): run "
            "`bash run.sh --preset cpu` (90% in ~30 min on 2 cores) or `--preset transfer`, "
            "a smaller run (`--preset smoke`, fewer epochs, data.subset), or a GPU; "
            "or add --allow-slow (CIFAR10_ALLOW_SLOW=1) to train anyway"
        )
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", "--set-param", action="append", default=[], dest="overrides")
    parser.add_argument("--model", help="the one model the run targets (train@M, evaluate@M)")
    parser.add_argument("--sweep", action="store_true", help="the run is a sweep of --model")
    parser.add_argument("--epochs", type=int, help="a sweep's epochs per trial")
    parser.add_argument("--allow-slow", action="store_true", help="go ahead however long")
    args = parser.parse_args()
    if args.allow_slow:
        os.environ[ALLOW_SLOW_ENV] = "1"
    applied = with_overrides(args.overrides)
    params = applied.params
    if args.model:
        params.model(args.model)
    check(params)
    if args.sweep:
        tune = params.tune
        epochs = args.epochs or tune.epochs or params.train.epochs
        params = params.model_copy(
            update={"train": params.train.model_copy(update={"epochs": epochs})}
        )
        print(f"plan: a sweep of {tune.trials} trials, each `dvc exp run` of train@{args.model}")
        estimate(params, [args.model], tune.trials)
        return
    planned = plan_run(applied.text, [f"evaluate@{args.model}"] if args.model else [])
    print_plan(planned)
    names = models_to_train(planned)
    if names:
        estimate(params, names, 1)
    else:
        print("cost: no model trains")


if __name__ == "__main__":
    run_command(main)
