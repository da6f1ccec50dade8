"""Transfer learning: ImageNet weights against random weights, same run, through the real stages.

Runs prepare/validate/train/evaluate in a scratch copy of the project on the real CIFAR-10
(../shared/datasets/cifar10-jpeg.tar.gz by default) with timm's efficientnet_lite0, once from
../shared/weights/efficientnet_lite0.in1k.safetensors and once from random weights, and prints
both test accuracies and times as JSON.

    python -m benchmarks.transfer --per-class 250 --img-size 96 --epochs 3
    python -m benchmarks.transfer --freezing freeze_backbone --per-class 200 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.pipeline import (
    SHARED_DATA,
    SHARED_LITE0,
    lite0,
    prepare,
    scratch_project,
    train_and_evaluate,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA))
    parser.add_argument("--weights", default=str(SHARED_LITE0))
    parser.add_argument("--per-class", type=int, help="images per class per split; all if unset")
    parser.add_argument("--img-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--freezing", default="none", help="models.<m>.freezing.strategy")
    parser.add_argument("--only", choices=["pretrained", "random"], help="one of the two runs")
    args = parser.parse_args()

    runs = {"pretrained": str(Path(args.weights).resolve()), "random": False}
    if args.only:
        runs = {args.only: runs[args.only]}
    models = {name: lite0(weights, args.img_size, args.freezing) for name, weights in runs.items()}
    changes = [
        f"data.subset={'null' if args.per_class is None else args.per_class}",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        "train.patience=null",
        "train.warmup_epochs=0.0",
        "evaluate.tsne_samples=200",
        "evaluate.gradcam_samples=4",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        data = str(Path(args.data).resolve())
        project = scratch_project(Path(scratch) / "project", data, changes, models=models)
        prepare(project)
        results = {name: train_and_evaluate(project, name) for name in runs}
        counts = json.loads((project / "metrics/prepare.json").read_text())
    report = {"counts": counts, "img_size": args.img_size, "epochs": args.epochs, **results}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
