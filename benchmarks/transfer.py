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
    prepare,
    scratch_project,
    train_and_evaluate,
)
from stages.preset import hydra_value


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
    models = {
        name: {
            "arch": "efficientnet_lite0",
            "pretrained": weights,
            "img_size": args.img_size,
            "lr_scale": 1.0,
            "freezing": {
                "strategy": args.freezing,
                "groups": 0,
                "schedule": [],
                "layer_decay": 0.75,
            },
        }
        for name, weights in runs.items()
    }
    changes = [
        "~downloads.cifar10",
        f"data.source={json.dumps(str(Path(args.data).resolve()))}",
        f"data.subset={'null' if args.per_class is None else args.per_class}",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}",
        "train.patience=null",
        "train.warmup_epochs=0.0",
        "evaluate.tsne_samples=200",
        "evaluate.gradcam_samples=4",
        *(f"~models.{name}" for name in ("resnet", "efficientnet", "vit")),
        *(f"+models.{name}={hydra_value(model)}" for name, model in models.items()),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        project = scratch_project(Path(scratch) / "project", None, changes)
        prepare(project)
        results = {name: train_and_evaluate(project, name) for name in runs}
        counts = json.loads((project / "metrics/prepare.json").read_text())
    report = {"counts": counts, "img_size": args.img_size, "epochs": args.epochs, **results}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
