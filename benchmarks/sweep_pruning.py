"""The same Optuna sweep with and without pruning, on the real data: epochs spent, best value.

Each sweep runs `python -m stages.sweep` in its own scratch git + DVC repository (the trials are
real DVC experiments) on a per-class subset of ../shared/datasets/cifar10-jpeg.tar.gz with the
small airbench net, the same seeded TPE sampler, search space and trial count.

    python -m benchmarks.sweep_pruning --per-class 100 --trials 8 --epochs 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from benchmarks.pipeline import ROOT, SHARED_DATA, scratch_project
from stages.common.config.presets import hydra_value

SPACE = {
    "train.lr": {"type": "float", "low": 0.01, "high": 3.0, "log": True},
    "train.weight_decay": {"type": "float", "low": 0.0001, "high": 0.01, "log": True},
    "train.label_smoothing": {"type": "float", "low": 0.0, "high": 0.3},
}


def command(repo: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1"}
    # DVC runs the stages' `python -m ...` from PATH: this interpreter's, activated or not
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for key in ("AUTHOR", "COMMITTER"):
        env.setdefault(f"GIT_{key}_NAME", "benchmark")
        env.setdefault(f"GIT_{key}_EMAIL", "benchmark@example.com")
    result = subprocess.run(args, cwd=repo, env=env)
    if result.returncode:
        sys.exit(f"{' '.join(args)} failed with exit code {result.returncode}")


def sweep(folder: Path, data: str, per_class: int, trials: int, epochs: int, pruner: str) -> dict:
    repo = scratch_project(
        folder,
        data,
        [
            f"data.subset={per_class}",
            "data.val_ratio=0.1",
            "train.batch_size=64",
            f"tune.trials={trials}",
            f"tune.epochs={epochs}",
            f"tune.pruner={pruner}",
            "tune.startup_trials=2",
            "~tune.space",
            f"+tune.space={hydra_value(SPACE)}",
        ],
        preset="cpu",
    )
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    command(repo, "git", "init", "-q")
    command(repo, sys.executable, "-m", "dvc", "init", "-q")
    command(repo, sys.executable, "-m", "dvc", "repro", "-q", "validate")
    command(repo, "git", "add", "-A")
    command(repo, "git", "commit", "-qm", "benchmark")
    started = time.perf_counter()
    command(repo, sys.executable, "-m", "stages.sweep", "airbench")
    minutes = (time.perf_counter() - started) / 60
    storage = f"sqlite:///{repo / '.dvc/tmp/studies/sweep-airbench.db'}"
    study = optuna.load_study(study_name="sweep-airbench", storage=storage)
    states = [trial.state.name for trial in study.trials]
    return {
        "pruner": pruner,
        "trials": len(study.trials),
        "pruned": states.count("PRUNED"),
        "epochs_spent": sum(len(trial.intermediate_values) for trial in study.trials),
        "best_val_loss": round(study.best_value, 4),
        "best_params": study.best_params,
        "minutes": round(minutes, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA))
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    data = str(Path(args.data).resolve())
    with tempfile.TemporaryDirectory() as scratch:
        results = [
            sweep(Path(scratch) / pruner, data, args.per_class, args.trials, args.epochs, pruner)
            for pruner in ("none", "median")
        ]
    print(json.dumps({"per_class": args.per_class, "epochs": args.epochs, "runs": results}))


if __name__ == "__main__":
    main()
