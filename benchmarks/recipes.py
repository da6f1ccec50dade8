"""Training recipes tried side by side through the real stages, on one prepared data set.

    python -m benchmarks.recipes --preset transfer_gpu --data PATH \\
        -S models.lite0.pretrained=/path/efficientnet_lite0.in1k.safetensors \\
        --recipe preset \\
        --recipe no_mixing train.augment.cutmix=0.0 train.augment.mixup=0.0 \\
        --recipe standard_augment train.augment.strategy=standard \\
        [--budget-minutes 9] [--out FILE]

Every recipe is the preset's model (``--model``; the preset's only one by default) under the
recipe's name with the recipe's changes, keys of the model's entry (``train.ema_decay=null``
becomes its own ``train:`` override, ``img_size=160`` its size). Prepare and validate run once,
then each recipe's train and evaluate stages in the order given, while the budget left is more
than the slowest recipe so far took; the rest are reported as not run. With ``--out`` the JSON
is rewritten after each recipe, so that a run cut short keeps what finished.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.output import publish, write_json
from benchmarks.pipeline import SHARED_DATA, prepare, scratch_project, train_and_evaluate
from benchmarks.throughput import machine
from stages.common.config.overrides import with_overrides
from stages.common.config.presets import hydra_value
from stages.common.plumbing.errors import ParamsError

QUICK = [  # a check on a CPU: a tiny net on a subset
    "data.subset=10",
    "data.val_ratio=0.1",
    "train.epochs=1",
    "train.batch_size=20",
    "evaluate.robustness.enabled=false",
    "evaluate.tsne_samples=40",
    "evaluate.gradcam_samples=2",
]


def recipe_model(base: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """``base`` (a `models` entry) with ``changes`` (``key.path=YAML value``) set in it."""
    model = copy.deepcopy(base)
    for change in changes:
        key, equals, text = change.partition("=")
        if not equals or not key:
            raise ParamsError(f"recipe change '{change}': expected KEY=VALUE, e.g. train.lr=0.002")
        *parents, leaf = key.split(".")
        entry = model
        for parent in parents:
            entry = entry.setdefault(parent, {})
            if not isinstance(entry, dict):
                raise ParamsError(f"recipe change '{change}': {parent} is not a mapping")
        entry[leaf] = yaml.safe_load(text)
    return model


def recipes_project(
    folder: Path,
    data: str,
    preset: str,
    changes: list[str],
    recipes: dict[str, list[str]],
    model: str | None,
) -> Path:
    """A scratch project whose `models` are the recipes: ``model`` of ``preset`` (after
    ``changes``) under each recipe's name, with its changes."""
    project = scratch_project(folder, data, changes, preset=preset)
    models = yaml.safe_load((project / "params.yaml").read_text())["models"]
    if model is None:
        if len(models) != 1:
            raise ParamsError(f"preset {preset}: {len(models)} models; name one with --model")
        model = next(iter(models))
    if model not in models:
        raise ParamsError(f"--model {model}: not in preset {preset} (models: {', '.join(models)})")
    swap = [f"~models.{name}" for name in models]
    swap += [
        f"+models.{name}={hydra_value(recipe_model(models[model], recipe))}"
        for name, recipe in recipes.items()
    ]
    params = project / "params.yaml"
    params.write_text(with_overrides(swap, params).text)
    return project


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Machine: {report['machine']}; preset {report['preset']}",
        "",
        "| recipe | changes | test accuracy | best val accuracy (epoch) | training min "
        "| train + evaluate min |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, run in report["recipes"].items():
        changes = " ".join(f"`{change}`" for change in run["changes"]) or "the preset's"
        if "test_accuracy" not in run:
            lines.append(f"| {name} | {changes} | not run: {run['not_run']} | | | |")
            continue
        lines.append(
            f"| {name} | {changes} | {run['test_accuracy']:.2%} "
            f"| {run['best_val_accuracy']:.2%} ({run['best_epoch']}) | {run['train_minutes']:.2f} "
            f"| {run['stage_minutes'] + run['evaluate_minutes']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--data", default=str(SHARED_DATA))
    parser.add_argument("--model", help="the preset's model the recipes start from")
    parser.add_argument(
        "-S", dest="changes", action="append", default=[], help="a change for every recipe"
    )
    parser.add_argument(
        "--recipe",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "KEY=VALUE"),
        help="a recipe: its name, then changes to the model's entry",
    )
    parser.add_argument("--budget-minutes", type=float, help="start no recipe past this")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a check")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    recipes = {name: changes for name, *changes in args.recipe}
    if len(recipes) != len(args.recipe):
        parser.error("--recipe: each needs a name of its own")
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": machine(),
        "preset": args.preset,
        "changes": (QUICK if args.quick else []) + args.changes,
        "recipes": {name: {"changes": changes} for name, changes in recipes.items()},
    }
    with tempfile.TemporaryDirectory() as scratch:
        data = str(Path(args.data).resolve())
        try:
            project = recipes_project(
                Path(scratch), data, args.preset, report["changes"], recipes, args.model
            )
        except ParamsError as error:
            raise SystemExit(f"error: {error}") from None
        prepare(project)
        slowest = 0.0
        for name, run in report["recipes"].items():
            spent = (time.perf_counter() - started) / 60
            if args.budget_minutes is not None and spent + slowest > args.budget_minutes:
                run["not_run"] = (
                    f"{spent:.1f} of the {args.budget_minutes} min budget spent, "
                    f"and a recipe took up to {slowest:.2f}"
                )
                continue
            recipe_started = time.perf_counter()
            run.update(train_and_evaluate(project, name))
            slowest = max(slowest, (time.perf_counter() - recipe_started) / 60)
            if args.out:
                write_json(report, args.out)
    report["minutes"] = round((time.perf_counter() - started) / 60, 2)
    publish(report, markdown(report), args.out)


if __name__ == "__main__":
    main()
