"""Transfer learning check: ImageNet weights against random weights, same short run.

Runs the real prepare/validate/train/evaluate stages twice in a scratch copy of the project on a
subset of the real CIFAR-10 (../shared/datasets/cifar10-jpeg.tar.gz by default) with timm's
efficientnet_lite0: once from ../shared/weights/efficientnet_lite0.in1k.safetensors, once from
random weights, and prints both test accuracies.

    python benchmarks/transfer.py --per-class 250 --img-size 128 --epochs 3
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def run(project: Path, module: str, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(project)}
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=project, env=env)
    if result.returncode:
        sys.exit(f"{module} {' '.join(args)} failed with exit code {result.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets/cifar10-jpeg.tar.gz"))
    parser.add_argument(
        "--weights", default=str(SHARED / "weights/efficientnet_lite0.in1k.safetensors")
    )
    parser.add_argument("--per-class", type=int, default=250, help="images per class per split")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / "project"
        project.mkdir()
        shutil.copytree(ROOT / "stages", project / "stages")
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"].update(source=args.data, subset=args.per_class)
        params["train"].update(
            epochs=args.epochs,
            batch_size=args.batch_size,
            workers=2,
            patience=None,
            lr=1e-3,
            warmup_epochs=0,
        )
        params["evaluate"].update(tsne_samples=200, gradcam_samples=4)
        runs = {"pretrained": args.weights, "random": False}
        params["models"] = {
            name: {
                "arch": "efficientnet_lite0",
                "pretrained": weights,
                "img_size": args.img_size,
                "freezing": {"strategy": "none"},
            }
            for name, weights in runs.items()
        }
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run(project, "stages.prepare")
        run(project, "stages.validate")
        results = {}
        for name in runs:
            started = time.perf_counter()
            run(project, "stages.train", name)
            run(project, "stages.evaluate", name)
            evaluation = json.loads((project / f"metrics/evaluate/{name}.json").read_text())
            results[name] = {
                "test_accuracy": evaluation["accuracy"],
                "test_loss": evaluation["loss"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    print(
        json.dumps(
            {
                "counts": manifest["counts"],
                "img_size": args.img_size,
                "epochs": args.epochs,
                **results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
