"""The real stages in a scratch copy of the project, for benchmarks that measure accuracy:
params.yaml plus a preset and `-S` overrides (applied as `dvc exp run -S` would), then
prepare, validate, train and evaluate as subprocesses, then the metrics they wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from stages.common.config.overrides import with_overrides
from stages.common.config.presets import load_preset, overrides, reading

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "datasets/cifar10-jpeg.tar.gz"
SHARED_LITE0 = SHARED / "weights/efficientnet_lite0.in1k.safetensors"


def scratch_project(
    folder: Path,
    data: str,
    changes: list[str],
    preset: str | None = None,
    models: dict[str, Any] | None = None,
) -> Path:
    """``folder`` with the stages and params.yaml + ``preset`` (run from ROOT), reading
    ``data`` instead of downloading, ``models`` in place of params.yaml's when given, and
    ``changes`` (-S syntax) last."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "stages", folder / "stages", dirs_exist_ok=True)
    shutil.copy(ROOT / "params.yaml", folder / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    partial = reading(load_preset(preset).sections if preset else {}, data)
    if models is not None:
        partial["models"] = models
    applied = with_overrides(overrides(partial, raw) + changes, folder / "params.yaml")
    (folder / "params.yaml").write_text(applied.text)
    return folder


def lite0(weights: str | bool, img_size: int, freezing: str = "none") -> dict[str, Any]:
    """A `models` entry: timm's efficientnet_lite0 from ``weights`` (a file, or False)."""
    return {
        "arch": "efficientnet_lite0",
        "pretrained": weights,
        "img_size": img_size,
        "lr_scale": 1.0,
        "freezing": {"strategy": freezing, "groups": 0, "schedule": [], "layer_decay": 0.75},
    }


def run_stage(project: Path, module: str, *args: str) -> float:
    """Seconds the stage took; exits with its status when it fails."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=project, env=env)
    if result.returncode:
        sys.exit(f"{module} {' '.join(args)} failed with exit code {result.returncode}")
    return time.perf_counter() - started


def prepare(project: Path) -> None:
    run_stage(project, "stages.prepare")
    run_stage(project, "stages.validate")


def train_and_evaluate(project: Path, model: str) -> dict[str, Any]:
    """Test metrics, best epoch and minutes of ``model`` trained and evaluated in ``project``."""
    train_seconds = run_stage(project, "stages.train", model)
    evaluate_seconds = run_stage(project, "stages.evaluate", model)
    evaluation = json.loads((project / f"metrics/evaluate/{model}.json").read_text())
    training = json.loads((project / f"metrics/train/{model}.json").read_text())
    return {
        "test_accuracy": evaluation["accuracy"],
        "test_loss": evaluation["loss"],
        "best_epoch": training["best_epoch"],
        "best_val_accuracy": training["best_val_accuracy"],
        "train_minutes": training["train_minutes"],
        "stage_minutes": round(train_seconds / 60, 2),
        "evaluate_minutes": round(evaluate_seconds / 60, 2),
    }
