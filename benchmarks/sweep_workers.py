"""One sweep on one worker against the same sweep on two workers sharing a PostgreSQL study.

Two clones of one scratch git + DVC repository stand in for two machines (a shared directory
DVC remote, timm's tiny test_resnet at 32 px on a per-class subset of the real data); the
same seeded budget of trials, no pruning, runs once with one worker and once with two
workers started together on one study, each time in fresh clones (a clone that has run a
trial's params restores it from DVC's run-cache). PostgreSQL is a throwaway server of
Debian's package (tests/services.py; run as root) unless --storage names one. Prints JSON:
minutes, trials per minute, and the speed-up.

    python -m benchmarks.sweep_workers --trials 6 --epochs 2 --per-class 100
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from benchmarks.pipeline import ROOT, SHARED_DATA, scratch_project
from benchmarks.sweep_pruning import command
from tests import services

TINY = {"arch": "test_resnet", "pretrained": False, "img_size": 32, "lr_scale": 1.0}


def machines(folder: Path, data: str, per_class: int, trials: int, epochs: int) -> list[Path]:
    """Two clones of one repository with the data prepared, sharing a DVC remote."""
    first = scratch_project(
        folder / "first",
        data,
        [
            f"data.subset={per_class}",
            "train.batch_size=64",
            "train.warmup_epochs=0",
            f"tune.trials={trials}",
            f"tune.epochs={epochs}",
            "tune.pruner=none",
            "tune.sampler=random",
            "validate.drift_tolerance=1.0",
        ],
        models={"resnet": TINY},
    )
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, first / name)
    command(first, "git", "init", "-q")
    command(first, sys.executable, "-m", "dvc", "init", "-q")
    command(first, sys.executable, "-m", "dvc", "remote", "add", "-d", "team", str(folder / "dvc"))
    command(first, sys.executable, "-m", "dvc", "repro", "-q", "validate")
    command(first, "git", "add", "-A")
    command(first, "git", "commit", "-qm", "benchmark")
    command(first, sys.executable, "-m", "dvc", "push", "-q")
    second = folder / "second"
    command(folder, "git", "clone", "-q", str(first), str(second))
    command(second, sys.executable, "-m", "dvc", "pull", "-q", "--allow-missing")
    return [first, second]


def sweep(clones: list[Path], storage: str, study: str) -> float:
    """Minutes until every worker (one per clone) has finished the study."""
    env_args = [sys.executable, "-m", "stages.sweep", "resnet", "-S", f"tune.study={study}"]
    started = time.perf_counter()
    workers = [
        subprocess.Popen(
            env_args,
            cwd=clone,
            env={
                "PYTHONPATH": str(clone),
                "SWEEP_STORAGE": storage,
                "DVC_NO_ANALYTICS": "1",
                "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                "HOME": str(clone),
                "GIT_AUTHOR_NAME": "benchmark",
                "GIT_AUTHOR_EMAIL": "benchmark@example.com",
                "GIT_COMMITTER_NAME": "benchmark",
                "GIT_COMMITTER_EMAIL": "benchmark@example.com",
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for clone in clones
    ]
    for worker in workers:
        if worker.wait():
            sys.exit(f"a sweep worker failed with exit code {worker.returncode}")
    return (time.perf_counter() - started) / 60


def report(storage: str, study: str, minutes: float, workers: int) -> dict:
    trials = optuna.load_study(study_name=study, storage=storage).trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {
        "workers": workers,
        "trials": len(done),
        "minutes": round(minutes, 2),
        "trials_per_minute": round(len(done) / minutes, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA))
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--storage", help="a PostgreSQL URL (default: a throwaway server)")
    args = parser.parse_args()
    folder = services.temporary_folder()
    server = None
    try:
        storage = args.storage
        if storage is None:
            server = services.Postgres(folder / "postgres", services.free_port()).start()
            storage = server.url()
        scratch = Path(tempfile.mkdtemp(dir=folder))
        settings = (str(Path(args.data).resolve()), args.per_class, args.trials, args.epochs)
        # fresh clones for each sweep: the same seeded trials in a clone that has run them
        # would come back from DVC's run-cache instead of training
        alone = machines(scratch / "one", *settings)[:1]
        one = report(storage, "one-worker", sweep(alone, storage, "one-worker"), 1)
        pair = machines(scratch / "two", *settings)
        two = report(storage, "two-workers", sweep(pair, storage, "two-workers"), 2)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    speedup = round(one["minutes"] / two["minutes"], 2)
    print(
        json.dumps(
            {
                "per_class": args.per_class,
                "epochs": args.epochs,
                "runs": [one, two],
                "speedup": speedup,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
