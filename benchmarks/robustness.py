"""What `evaluate.robustness` costs: generating each corruption, and predicting the corrupted
images with a model at its evaluation's test-time augmentation, on this machine.

    python -m benchmarks.robustness --arch airbench --images 500 --tta flip_translate

The model has random weights (a forward pass costs the same whatever the weights); the images
are random too (the corruptions' cost does not depend on the content). The total is what
evaluate@<m> adds: every corruption x severity generated and predicted, plus the clean subset.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from stages.common.evaluation.corruptions import NAMES, SEVERITIES, corrupt
from stages.common.models.factory import create_architecture, resolve_preprocessing
from stages.common.models.inference import DeviceInput, inference_device, predict_logits

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="airbench")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument(
        "--tta", default="flip_translate", choices=["none", "flip", "flip_translate"]
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/robustness.json")
    args = parser.parse_args()

    images = np.random.default_rng(0).integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    indices = np.arange(args.images)
    generation = {}
    for name in NAMES:
        started = time.perf_counter()
        for severity in SEVERITIES:
            corrupt(images, name, severity, 0, indices)
        generation[name] = time.perf_counter() - started
        print(f"{name:18s} {generation[name]:6.2f} s for 5 severities x {args.images} images")

    torch.manual_seed(0)
    device = inference_device()
    model = create_architecture(args.arch, 10, args.img_size, pretrained=False).to(device)
    device_input = DeviceInput(resolve_preprocessing(model, False, args.img_size), device)
    predict_logits(model, images[: args.batch], device_input, args.batch, tta=args.tta)  # warm-up
    started = time.perf_counter()
    predict_logits(model, images, device_input, args.batch, tta=args.tta)
    one_pass = time.perf_counter() - started
    passes = len(NAMES) * len(SEVERITIES) + 1  # every cell, and the clean subset
    total = sum(generation.values()) + passes * one_pass
    machine = platform.processor() or platform.machine()
    result = {
        "machine": f"{machine}, {torch.get_num_threads()} torch threads",
        "device": device.type,
        "arch": args.arch,
        "img_size": args.img_size,
        "tta": args.tta,
        "images": args.images,
        "generation_seconds": generation,
        "generation_total_seconds": sum(generation.values()),
        "prediction_seconds_per_pass": one_pass,
        "prediction_images_per_second": args.images / one_pass,
        "prediction_total_seconds": passes * one_pass,
        "total_seconds": total,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = [
        f"| {args.arch} at {args.img_size} px, TTA {args.tta}, {args.images} images | seconds |",
        "|---|---:|",
        f"| generating 15 corruptions x 5 severities | {sum(generation.values()):.1f} |",
        f"| predicting {passes} x {args.images} images "
        f"({args.images / one_pass:.0f} images/s) | {passes * one_pass:.1f} |",
        f"| **added to evaluate** | **{total:.1f}** |",
    ]
    args.out.with_suffix(".md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
