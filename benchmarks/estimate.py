"""How close run.sh's cost estimate comes to the training it estimates, on this machine.

For a preset (default: cpu) on the real data, a scratch project is prepared, the estimate is
made exactly as `run.sh` makes it (stages/common/estimate.py, for the prepared split sizes),
then the train stage runs for real and its training minutes (metrics/train/<m>.json) are set
against the estimate. Prints JSON.

    python -m benchmarks.estimate --preset cpu --per-class 1000 --epochs 2
    python -m benchmarks.estimate --preset transfer --per-class 200 --epochs 1 \
        -S models.lite0.pretrained=false
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.pipeline import SHARED_DATA, prepare, run_stage, scratch_project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA))
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--per-class", type=int, default=1000, help="data.subset")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("-S", dest="changes", action="append", default=[])
    args = parser.parse_args()
    changes = [f"data.subset={args.per_class}", f"train.epochs={args.epochs}", *args.changes]
    with tempfile.TemporaryDirectory() as scratch:
        data = str(Path(args.data).resolve())
        project = scratch_project(Path(scratch) / "project", data, changes, preset=args.preset)
        prepare(project)
        here = Path.cwd()
        os.chdir(project)
        try:
            from stages.common.estimate import estimate_model
            from stages.common.params import load_params

            params = load_params()
            counts = json.loads(Path("metrics/prepare.json").read_text())
            results = {}
            for name in params.models:
                started = time.perf_counter()
                guess = estimate_model(
                    params, name, counts["train_images"], counts["val_images"], args.epochs
                )
                estimate_seconds = time.perf_counter() - started
                run_stage(project, "stages.train", name)
                actual = json.loads(Path(f"metrics/train/{name}.json").read_text())
                results[name] = {
                    "arch": guess.arch,
                    "timed_batch": guess.timed_batch,
                    "estimate_took_seconds": round(estimate_seconds, 1),
                    "estimated_train_minutes": round(guess.seconds / 60, 2),
                    "actual_train_minutes": round(actual["train_minutes"], 2),
                    "ratio": round(guess.seconds / 60 / actual["train_minutes"], 2),
                }
        finally:
            os.chdir(here)
    print(json.dumps({"preset": args.preset, "counts": counts, **results}, indent=2))


if __name__ == "__main__":
    main()
