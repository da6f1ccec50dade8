"""What `evaluate.robustness` costs: generating each corruption, and predicting the corrupted
images with a model at its evaluation's test-time augmentation, on this machine.

    python -m benchmarks.robustness --arch airbench --images 500 --tta flip_translate

The model has random weights (a forward pass costs the same whatever the weights); the images
are random too (the corruptions' cost does not depend on the content). Each part is timed on
its own (generation in line, one prediction pass), then the whole as evaluate@<m> runs it:
the clean subset and every corruption x severity predicted while the next cells are generated
in worker processes (`corrupted_cells`): what evaluate adds.
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
from stages.common.evaluation.robustness import corrupted_cells, generation_workers
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

    def predict(batch: np.ndarray) -> None:
        predict_logits(model, batch, device_input, args.batch, tta=args.tta)

    predict(images[: args.batch])  # warm-up
    started = time.perf_counter()
    predict(images)
    one_pass = time.perf_counter() - started
    passes = len(NAMES) * len(SEVERITIES) + 1  # every cell, and the clean subset

    workers = generation_workers(device)
    started = time.perf_counter()
    predict(images)
    cells = [(name, severity) for name in NAMES for severity in SEVERITIES]
    for corrupted in corrupted_cells(images, cells, 0, indices, workers):
        predict(corrupted)
    total = time.perf_counter() - started
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
        "generation_workers": workers,
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
        f"| both, as evaluate runs them ({ahead(workers)}) | **{total:.1f}** |",
    ]
    args.out.with_suffix(".md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


def ahead(workers: int) -> str:
    if workers == 0:
        return "each cell generated, then predicted"
    return f"the next cells generated in {workers} worker processes while it predicts"


if __name__ == "__main__":
    main()
