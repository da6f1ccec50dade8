"""From-scratch training against the CIFAR-10 speed record, both measured in one run.

    python -m benchmarks.record --data ../shared/datasets/cifar10-jpeg.tar.gz \\
        [--variant train.compile=true ...] [--peer-runs 5] [--profile] [--logs DIR] [--out FILE]
    python -m benchmarks.record --data PATH --quick --profile   # a check: airbench_small, tiny

1. Ours: the cpu preset's airbench net through the real stages (prepare, validate, train,
   evaluate; robustness off). On CUDA at airbench94_muon's settings (8 epochs of 2,000, Muon
   at 0.24 with momentum 0.6), on a CPU as the preset has it (the check that the CPU recipe
   kept its accuracy and time). Each ``--variant`` (``-S`` syntax, comma-separated) is one more
   run with those changes on top.
2. The peer, when CUDA is there and ``--reference`` (default ``../shared/reference/``) exists:
   Keller Jordan's airbench94_muon.py run as its README says for a short run, from a scratch
   folder (``--peer-runs`` trainings in place of 200, torch.compile's default mode in place of
   max-autotune), on the same JPEG data converted by the README's script. Its seconds are its
   own CUDA-event timer: the whitening init, the training epochs and the TTA evaluation,
   compilation excluded (a warm-up run on random labels pays for it). Ours are the train
   stage's ``train_minutes``: the training epochs, compilation included when it is on. The
   ratio is ours over its mean.
3. With ``--profile``: one epoch of our Trainer (after a warm-up epoch) under torch.profiler,
   over generated images of the recipe's shapes: the operators that took the most time (and a
   Chrome trace of the epoch in ``--logs``).

``--logs DIR`` keeps the peer's output and the profile's files.

Prints one JSON and a markdown table naming the device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity
from torch.profiler import profile as profiler

from benchmarks.output import publish
from benchmarks.pipeline import SHARED, prepare, scratch_project, train_and_evaluate
from benchmarks.throughput import machine
from stages.common.config.params import load_params
from stages.common.preflight.cost_estimate import generated_run
from stages.common.training.trainer import Trainer

REFERENCE = SHARED / "reference"
# airbench94_muon's own settings, in this project's params (shared/reference/README.md)
RECORD_SETTINGS = [
    "train.epochs=8",
    "train.batch_size=2000",
    "train.muon_lr=0.24",
    "train.muon_momentum=0.6",
]
OURS = ["evaluate.robustness.enabled=false"]
QUICK = [
    "data.subset=20",
    "data.val_ratio=0.1",
    "models.airbench.arch=airbench_small",
    "train.epochs=2",
    "train.batch_size=40",
]
PROFILE_ROWS = 25


def ours(data: str, changes: list[str], folder: Path) -> dict[str, Any]:
    """The cpu preset's net trained and evaluated through the stages with ``changes``, and
    its epochs' seconds: ``steady_seconds`` is every epoch at the median epoch's time, what
    the run costs once compilation and warm-up are paid (the peer pays them before timing)."""
    project = scratch_project(folder, data, OURS + changes, preset="cpu")
    prepare(project)
    result = train_and_evaluate(project, "airbench")
    rates = project / "dvclive/airbench/plots/metrics/train/images_per_second.tsv"
    per_epoch = [float(row.split("\t")[1]) for row in rates.read_text().splitlines()[1:]]
    images = json.loads((project / "metrics/prepare.json").read_text())["train_images"]
    batch = load_params(project / "params.yaml").train.batch_size
    seconds = [images // batch * batch / rate for rate in per_epoch]
    return {
        "changes": changes,
        **result,
        "epoch_seconds": [round(value, 3) for value in seconds],
        "steady_seconds": round(len(seconds) * statistics.median(seconds), 3),
    }


def peer(reference: Path, data: str, runs: int, folder: Path, logs: Path | None) -> dict[str, Any]:
    """airbench94_muon's (from ``reference``) mean TTA accuracy and timed seconds over
    ``runs`` trainings."""
    folder.mkdir(parents=True, exist_ok=True)
    script = (reference / "airbench94_muon.py").read_text()
    short = script.replace("range(200)", f"range({runs})").replace('mode="max-autotune"', "")
    if short.count(f"range({runs})") != 1 or "max-autotune" in short:
        sys.exit(f"{reference / 'airbench94_muon.py'}: not the version this benchmark knows")
    (folder / "airbench94_muon.py").write_text(short)
    convert = [sys.executable, str(reference / "prep_airbench_data.py"), data, "cifar10"]
    subprocess.run(convert, cwd=folder, check=True)
    result = subprocess.run(
        [sys.executable, "airbench94_muon.py"], cwd=folder, capture_output=True, text=True
    )
    if logs:
        (logs / "peer.log").write_text(result.stdout + result.stderr)
    if result.returncode:
        sys.exit(f"the peer failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
    finals = peer_results(result.stdout)[1:]  # the first is the compile warm-up's
    if len(finals) != runs:
        sys.exit(f"the peer printed {len(finals)} results for {runs} runs:\n{result.stdout}")
    accuracies = [accuracy for accuracy, _ in finals]
    seconds = [seconds for _, seconds in finals]
    return {
        "runs": runs,
        "test_accuracy_mean": statistics.fmean(accuracies),
        "test_accuracy_std": statistics.stdev(accuracies) if runs > 1 else 0.0,
        "seconds_mean": statistics.fmean(seconds),
        "seconds": seconds,
    }


def peer_results(stdout: str) -> list[tuple[float, float]]:
    """(TTA accuracy, seconds) of each run in airbench94_muon's printed table: its rows whose
    epoch column reads ``eval``."""
    rows = []
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1] == "eval":
            rows.append((float(cells[4]), float(cells[5])))
    return rows


def profile(project: Path, images: int, logs: Path | None) -> list[dict[str, Any]]:
    """The operators of one profiled epoch of the recipe's Trainer over ``images`` generated
    images, most time first."""
    params = load_params(project / "params.yaml")
    run = generated_run(params, "airbench", images)
    trainer = Trainer(run)
    trainer.train_epoch(0)  # warm-up: kernels chosen, memory allocated
    activities = [ProfilerActivity.CPU]
    cuda = trainer.device.type == "cuda"
    if cuda:
        activities.append(ProfilerActivity.CUDA)
    with profiler(activities=activities) as recorded:
        _metrics, seconds = trainer.train_epoch(1)
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    table = recorded.key_averages().table(sort_by=sort, row_limit=PROFILE_ROWS)
    if logs:
        recorded.export_chrome_trace(str(logs / "epoch.trace.json"))
        (logs / "epoch.txt").write_text(f"one epoch: {seconds:.3f} s\n{table}\n")
    print(f"one profiled epoch: {seconds:.3f} s\n{table}")
    rows = sorted(recorded.key_averages(), key=lambda event: getattr(event, sort), reverse=True)
    return [
        {
            "name": event.key,
            "calls": event.count,
            "self_cpu_ms": round(event.self_cpu_time_total / 1e3, 2),
            "self_device_ms": round(event.self_device_time_total / 1e3, 2),
        }
        for event in rows[:PROFILE_ROWS]
    ]


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Machine: {report['machine']}",
        "",
        "| run | test accuracy (TTA) | training s | steady s | train stage s "
        "| over the peer (training, steady) |",
        "|---|---|---|---|---|---|",
    ]
    reference = report.get("peer")
    for run in report["ours"]:
        seconds = run["train_minutes"] * 60
        ratio = "-"
        if reference:
            mean = reference["seconds_mean"]
            ratio = f"{seconds / mean:.2f}x, {run['steady_seconds'] / mean:.2f}x"
        lines.append(
            f"| {' '.join(['ours', *run['changes']])} | {run['test_accuracy']:.2%} "
            f"| {seconds:.2f} | {run['steady_seconds']:.2f} | {run['stage_minutes'] * 60:.0f} "
            f"| {ratio} |"
        )
    if reference:
        lines.append(
            f"| airbench94_muon, {reference['runs']} runs "
            f"| {reference['test_accuracy_mean']:.2%} ± {reference['test_accuracy_std']:.2%} "
            f"| {reference['seconds_mean']:.2f} | | | |"
        )
    else:
        lines += ["", f"No peer run: {report['peer_skipped']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 image-folder tar or folder")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="one more run of ours with these -S changes (comma-separated)",
    )
    parser.add_argument("--peer-runs", type=int, default=5)
    parser.add_argument(
        "--reference", type=Path, default=REFERENCE, help="the peer's folder (shared/reference)"
    )
    parser.add_argument("--quick", action="store_true", help="a tiny net on a subset: a check")
    parser.add_argument("--profile", action="store_true", help="profile one epoch of ours")
    parser.add_argument("--logs", type=Path, help="keep the peer's log and the profile here")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    data = str(Path(args.data).resolve())
    cuda = torch.cuda.is_available()
    base = (RECORD_SETTINGS if cuda else []) + (QUICK if args.quick else [])
    report: dict[str, Any] = {"machine": machine(), "settings": base, "ours": []}
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        runs = [base] + [base + variant.split(",") for variant in args.variant]
        for number, changes in enumerate(runs):
            report["ours"].append(ours(data, changes, Path(scratch) / f"ours{number}"))
        if args.profile:
            images = 400 if args.quick else 50_000  # the training split's size
            report["profile"] = profile(Path(scratch) / "ours0", images, args.logs)
        if not cuda:
            report["peer_skipped"] = "no CUDA device (the peer needs one)"
        elif not args.reference.is_dir():
            report["peer_skipped"] = f"{args.reference} does not exist"
        else:
            peer_folder = Path(scratch) / "peer"
            report["peer"] = peer(args.reference, data, args.peer_runs, peer_folder, args.logs)
    publish(report, markdown(report), args.out)


if __name__ == "__main__":
    main()
