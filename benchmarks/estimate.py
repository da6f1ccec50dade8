"""How close run.sh's cost estimate comes to the training it estimates, on this machine, idle
or busy.

For a preset (default: cpu) on the real data, a scratch project is prepared, the estimate is made
exactly as `run.sh` makes it (stages/common/preflight/cost_estimate.py, for the prepared split
sizes), then the train stage runs for real; its training seconds (train_minutes: the epochs'
training steps, without validation) are set against the estimate of those steps, and the whole
stage's seconds are reported beside them. With ``--busy N``, N processes spin on the CPU for the
whole benchmark (a laptop doing other work; one per core is what issue 30 asks about). Prints JSON.

    python -m benchmarks.estimate --preset cpu --per-class 1000 --epochs 2
    python -m benchmarks.estimate --preset smoke --per-class 200 --epochs 1 --busy 2
    python -m benchmarks.estimate --preset transfer --per-class 200 --epochs 1 \
        -S models.lite0.pretrained=false
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.pipeline import SHARED_DATA, prepare, run_stage, scratch_project


def _spin() -> None:
    while True:
        pass


@contextmanager
def busy(processes: int) -> Iterator[None]:
    """``processes`` processes that keep a core each busy until the block ends."""
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(processes)]
    for spinner in spinners:
        spinner.start()
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA))
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--per-class", type=int, default=1000, help="data.subset")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--busy", type=int, default=0, help="processes spinning meanwhile")
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
            from stages.common.config.params import load_params
            from stages.common.preflight.cost_estimate import estimate_model

            params = load_params()
            counts = json.loads(Path("metrics/prepare.json").read_text())
            results = {}
            with busy(args.busy):
                for name in params.models:
                    started = time.perf_counter()
                    guess = estimate_model(
                        params, name, counts["train_images"], counts["val_images"], args.epochs
                    )
                    estimate_seconds = time.perf_counter() - started
                    stage_seconds = run_stage(project, "stages.train", name)
                    metrics = json.loads(Path(f"metrics/train/{name}.json").read_text())
                    actual = metrics["train_minutes"] * 60
                    results[name] = {
                        "arch": guess.arch,
                        "timed_batch": guess.timed_batch,
                        "estimate_took_seconds": round(estimate_seconds, 1),
                        "estimated_seconds": round(guess.step_total.typical, 1),
                        "estimated_range": [
                            round(guess.step_total.low, 1),
                            round(guess.step_total.high, 1),
                        ],
                        "estimated_with_validation": round(guess.seconds.typical, 1),
                        "trained_seconds": round(actual, 1),
                        "stage_seconds": round(stage_seconds, 1),
                        "ratio": round(guess.step_total.typical / actual, 2),
                    }
        finally:
            os.chdir(here)
    report = {"preset": args.preset, "busy": args.busy, "cpus": os.cpu_count(), "counts": counts}
    print(json.dumps({**report, **results}, indent=2))


if __name__ == "__main__":
    main()
