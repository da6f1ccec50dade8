"""preflight: what run.sh does before DVC starts: the run's params and where they come from,
the checks, the plan, the cost, and a stop for a run too slow for this machine.

    python -m stages.preflight [--preset NAME] [--data PATH] [-S key=value ...] [--epochs N]
        [--model M] [--sweep] [--from-workspace] [--allow-slow] [--dry-run] [--start FILE]

1. The params: the committed params.yaml with the preset, --data, the -S overrides and EPOCHS
   on top (stages/common/config/param_changes.py); every param that differs from the committed file
   is printed with where it came from.
2. The checks of stages.check_params (every model buildable, the split possible).
3. The plan: which stages will run, which DVC will skip (stages/common/preflight/plan.py).
4. The cost: real training steps of every model whose training will run, timed on the device
   it will use, scaled to the configured epochs (stages/common/preflight/cost_estimate.py).
5. Without a GPU, a run whose estimate is over an hour even at its fastest stops here with one
   line naming the ways on, unless --allow-slow (CIFAR10_ALLOW_SLOW=1) says to go ahead or the
   preset is made for this device (its `runs_on`). A dry run says so and exits 0.
6. With --start FILE (a real run, not a dry one): params.yaml becomes the file the run starts
   from (the workspace's own changes saved first) and FILE gets the overrides for
   `dvc exp run -S`, one per line.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import textwrap
import time
from pathlib import Path

from stages.check_params import check
from stages.common.config.param_changes import (
    Layer,
    RunParams,
    data_layer,
    describe_changes,
    epochs_layer,
    preset_layer,
    resolve,
    set_layer,
    start_run,
)
from stages.common.config.params import Params
from stages.common.config.presets import Preset, load_preset
from stages.common.data.splitting import expected_split_sizes
from stages.common.plumbing.command import run_command
from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.files import write_text
from stages.common.preflight.plan import PlannedStage, plan_run
from stages.common.tuning.sweep import refuse_overridden_space

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


def to_run(planned: list[PlannedStage], stage: str) -> list[str]:
    """The items of the foreach stage ``stage`` (train, distill) that will run."""
    return [
        p.name.split("@", 1)[1]
        for p in planned
        if p.name.startswith(f"{stage}@") and p.action == "run"
    ]


def estimate(
    params: Params,
    names: list[str],
    trials: int,
    students: list[str] | None = None,
    epochs: int | None = None,
) -> tuple[str, float, str]:
    """Print each model's (and student's) estimate and the total; return the device, the
    total's fastest plausible seconds and how the total reads. ``epochs``: a sweep trial's,
    instead of each model's own."""
    from stages.common.plumbing.durations import duration
    from stages.common.preflight.cost_estimate import (
        estimate_model,
        estimate_student,
        spread_duration,
    )

    sizes = expected_split_sizes(params.data)
    if sizes is None:
        print("cost: not estimated (the training set's size is known once prepare has run)")
        return "", 0.0, ""
    train_images, val_images = sizes
    started = time.perf_counter()
    estimates = [
        estimate_model(
            params, name, train_images, val_images, epochs or params.training(name).epochs
        )
        for name in names
    ]
    known = {e.name: e for e in estimates}
    for name in students or []:
        estimates.append(estimate_student(params, name, known, train_images, val_images))
    took = time.perf_counter() - started
    device = estimates[0].device
    print(f"estimated training time on this {device.upper()} (steps timed for {took:.0f} s):")
    for e in estimates:
        per_trial = f" per trial, x {trials} trials" if trials > 1 else ""
        print(
            f"  {e.name:<14} {e.arch} at {e.img_size} px, batch {e.batch_size}: "
            f"{duration(e.epoch_seconds.typical)} per epoch, {spread_duration(e.seconds)} for "
            f"{e.epochs} epoch{'s' if e.epochs != 1 else ''}{per_trial}"
        )
    total = sum((e.seconds for e in estimates[1:]), estimates[0].seconds) * trials
    said = spread_duration(total)
    busy = " (the timed steps disagreed: this machine is busy)" if total.disagrees else ""
    print(f"  total: {said} ({train_images:,} training images per epoch){busy}")
    return device, total.low, said


def ways_on(args: argparse.Namespace) -> str:
    """What to run instead of a run too slow for this CPU, with the user's --data and the -S
    overrides that apply to each preset named (one of a model the preset does not have would
    make the suggested command fail: it is left out, and said so)."""

    def command(preset: str, *notes: str) -> str:
        data = ["--data", args.data] if args.data else []
        kept, left_out = [], []
        # one check where all apply (none: nothing to check)
        together = not args.overrides or applies(preset, args.data, args.overrides)
        for override in args.overrides:
            if together or applies(preset, args.data, [override]):
                kept += ["-S", override]
            else:
                left_out.append(override)
        if left_out:
            notes += (f"without -S {', '.join(left_out)}: not a param of that run",)
        said = f" ({'; '.join(notes)})" if notes else ""
        return f"`{shlex.join(['bash', 'run.sh', '--preset', preset, *data, *kept])}`{said}"

    return (
        f"run {command('cpu', '90% in ~30 min on 2 cores')} or {command('transfer')}, a "
        "smaller run (`--preset smoke`, fewer epochs, data.subset), or a GPU; or add "
        "--allow-slow (CIFAR10_ALLOW_SLOW=1) to train anyway"
    )


def applies(preset: str, data: str | None, overrides: list[str]) -> bool:
    """Whether ``overrides`` are valid changes of the run of ``preset`` with ``data``."""
    stack = [preset_layer(load_preset(preset))] + ([data_layer(data)] if data else [])
    try:
        resolve([*stack, set_layer(overrides)], from_workspace=False)
    except ParamsError:
        return False
    return True


def gate(
    device: str, fastest: float, said: str, preset: Preset | None, args: argparse.Namespace
) -> None:
    """Stop a run of hours on a CPU before DVC starts; a dry run only says it would."""
    if device != "cpu" or fastest <= SLOW_SECONDS or os.environ.get(ALLOW_SLOW_ENV) == "1":
        return
    if preset is not None and device in preset.runs_on:
        print(
            f"note: the {preset.name} preset is made for a {device.upper()}: it runs however long"
        )
        return
    message = f"about {said} of training on this CPU (no GPU found): {ways_on(args)}"
    if args.dry_run:
        print(f"note: a real run would stop here: {message}")
        return
    raise TooSlowError(message)


def layers(args: argparse.Namespace, preset: Preset | None) -> list[Layer]:
    stack = [preset_layer(preset)] if preset else []
    if args.data:
        stack.append(data_layer(args.data))
    if args.overrides:
        stack.append(set_layer(args.overrides))
    if args.epochs and not args.sweep:
        stack.append(epochs_layer(args.epochs))
    return stack


def start(run: RunParams, overrides_file: Path) -> None:
    """params.yaml as the run starts from it, and the overrides DVC is to apply."""
    saved = start_run(run)
    if saved is not None:
        print(f"note: the workspace's own params.yaml is saved as {saved}")
    write_text(overrides_file, "".join(f"{override}\n" for override in run.overrides))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", help="a file presets/<name>.yaml")
    parser.add_argument("--data", help="read this data source instead of downloading")
    parser.add_argument("-S", "--set-param", action="append", default=[], dest="overrides")
    parser.add_argument("--epochs", type=int, help="train.epochs (a sweep's: per trial)")
    parser.add_argument("--model", help="the one model the run targets (train@M, evaluate@M)")
    parser.add_argument("--sweep", action="store_true", help="the run is a sweep of --model")
    parser.add_argument(
        "--from-workspace",
        action="store_true",
        help="start from the workspace's params.yaml, not the committed one",
    )
    parser.add_argument("--allow-slow", action="store_true", help="go ahead however long")
    parser.add_argument("--dry-run", action="store_true", help="say what a run would do")
    parser.add_argument("--start", type=Path, help="a real run: write params.yaml and this file")
    args = parser.parse_args()
    if args.allow_slow:
        os.environ[ALLOW_SLOW_ENV] = "1"
    preset = load_preset(args.preset) if args.preset else None
    run = resolve(layers(args, preset), args.from_workspace)
    print("\n".join(describe_changes(run)))
    params = run.applied.params
    if args.model:
        params.model(args.model)
    check(params)
    if args.sweep:
        tune = params.tune
        refuse_overridden_space(params, args.model)
        epochs = tune.trial_epochs(args.epochs, params.training(args.model).epochs)
        print(f"plan: a sweep of {tune.trials} trials, each `dvc exp run` of train@{args.model}")
        gate(*estimate(params, [args.model], tune.trials, epochs=epochs), preset, args)
    else:
        planned = plan_run(run.applied.text, [f"evaluate@{args.model}"] if args.model else [])
        print_plan(planned)
        names, students = to_run(planned, "train"), to_run(planned, "distill")
        if names or students:
            gate(*estimate(params, names, 1, students), preset, args)
        else:
            print("cost: no model trains")
    if args.start and not args.dry_run:
        start(run, args.start)


if __name__ == "__main__":
    run_command(main)
