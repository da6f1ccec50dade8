"""GPU figures no CPU can give, in one run of about 8 minutes on one H100/H200.

    python -m benchmarks.gpu --out benchmarks/results/gpu.json
    python -m benchmarks.gpu --data PATH --weights PATH     # + the recipe and lite0 transfer
    python -m benchmarks.gpu --quick                        # tiny models on any device: a check

1. training images/s and peak memory of ResNet-50, EfficientNet-B0 and ViT-B/16 at 224 px
   (random weights: the hub is unreachable from the GPU machine), bf16 + channels_last, with
   torch.compile off and on (the bare loop, so the figures are the model's, not ours);
2. our input pipeline against the seed's per-sample 224 px pipeline feeding the same GPU;
3. the Trainer against the bare loop on the same model and batch (overhead);
4. with --data: the CPU recipe (presets/cpu.yaml) with the full airbench net for 10 epochs,
   and with --weights too the efficientnet_lite0 transfer, through the real stages.
Prints one JSON and a markdown table naming the device.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import timm
import torch

from benchmarks.output import publish
from benchmarks.pipeline import lite0, prepare, scratch_project, train_and_evaluate
from benchmarks.throughput import (
    LoopSetup,
    bare_loop,
    input_pipeline,
    machine,
    random_images,
    synchronize,
    training_loop,
)
from stages.common.models.inference import inference_device
from stages.common.plumbing.machine import loader_workers

FULL = {"resnet50": 128, "efficientnet_b0": 128, "vit_base_patch16_224": 128}
QUICK = {"test_resnet": 16, "test_efficientnet": 16, "test_vit": 16}


def model_speed(arch: str, batch: int, img_size: int, compile_model: bool, steps: int) -> dict:
    """Images/s over ``steps`` after warm-up, and peak memory, of the bare bf16 loop."""
    on = inference_device()
    setup = LoopSetup(arch, batch, img_size, amp=True, channels_last=True, compile=compile_model)
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=10).to(on, memory_format=torch.channels_last)
    images = torch.randn(batch * steps, 3, img_size, img_size, device=on)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch * steps,), device=on)
    bare_loop(model, images[: batch * 3], labels[: batch * 3], setup, 1e-3, on)  # + compilation
    if on.type == "cuda":
        torch.cuda.reset_peak_memory_stats(on)
    speed = bare_loop(model, images, labels, setup, 1e-3, on)
    peak = torch.cuda.max_memory_allocated(on) / 2**30 if on.type == "cuda" else float("nan")
    return {
        "arch": arch,
        "batch": batch,
        "compile": compile_model,
        "images_per_second": round(speed, 1),
        "peak_memory_gib": round(peak, 2),
    }


def recipe_runs(data: str, weights: str | None, quick: bool) -> dict[str, Any]:
    """The CPU recipe at full size, and the lite0 transfer, through the real stages."""
    results: dict[str, Any] = {}
    subset = ["data.subset=50"] if quick else []
    with tempfile.TemporaryDirectory() as scratch:
        epochs = 2 if quick else 10
        recipe = scratch_project(
            Path(scratch) / "recipe",
            data,
            [
                *subset,
                f"train.epochs={epochs}",
                f"models.airbench.arch={'airbench_small' if quick else 'airbench'}",
                *(["train.batch_size=64"] if quick else []),  # else the preset's
                "train.workers=auto",
            ],
            preset="cpu",
        )
        prepare(recipe)
        results["recipe"] = {"epochs": epochs, **train_and_evaluate(recipe, "airbench")}
        if weights:
            transfer = scratch_project(
                Path(scratch) / "transfer",
                data,
                [
                    *subset,
                    "train.epochs=1" if quick else "train.epochs=3",
                    "train.warmup_epochs=0.0" if quick else "train.warmup_epochs=0.5",
                    "train.batch_size=16" if quick else "train.batch_size=128",
                    "train.amp=auto",
                ],
                models={"lite0": lite0(weights, 64 if quick else 224)},
            )
            prepare(transfer)
            results["lite0_transfer"] = train_and_evaluate(transfer, "lite0")
    return results


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Device: {report['machine']}",
        "",
        "| model | torch.compile | images/s (bf16, channels_last) | peak memory (GiB) |",
        "|---|---|---|---|",
    ]
    for row in report["models"]:
        lines.append(
            f"| {row['arch']} | {'on' if row['compile'] else 'off'} | "
            f"{row['images_per_second']} | {row['peak_memory_gib']} |"
        )
    feed = report["input_pipeline_224px"]
    loop = report["trainer_vs_bare_loop"]
    lines += [
        "",
        f"Input pipeline at 224 px: seed {feed['seed_images_per_second']} images/s, ours "
        f"{feed['ours_images_per_second']} ({feed['speedup']}x).",
        f"Trainer vs bare loop ({loop['arch']}, batch {loop['batch']}): "
        f"{loop['ours_images_per_second']} vs {loop['bare_images_per_second']} images/s "
        f"({loop['overhead_percent']}% overhead).",
    ]
    for name, run in report.get("accuracy", {}).items():
        lines.append(
            f"{name}: test accuracy {run['test_accuracy']:.4f} after {run['train_minutes']} "
            f"training minutes (best epoch {run['best_epoch']})."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models at 32 px: a check")
    parser.add_argument("--data", help="CIFAR-10 source for the recipe and transfer runs")
    parser.add_argument("--weights", help="efficientnet_lite0 weights for the transfer run")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    archs, size, steps = (QUICK, 32, 3) if args.quick else (FULL, 224, 30)
    models = [
        model_speed(arch, batch, size, compile_model, steps)
        for arch, batch in archs.items()
        for compile_model in ((False,) if args.quick else (False, True))
    ]
    images, labels = random_images(512 if args.quick else 8192)
    workers = loader_workers("auto")  # the CPUs this process may use (cgroup too), at most 8
    loop_arch, loop_batch = next(iter(archs.items()))
    report: dict[str, Any] = {
        "machine": machine(),
        "models": models,
        "input_pipeline_224px": input_pipeline(images, labels, workers, 256),
        "trainer_vs_bare_loop": training_loop(
            images, labels, LoopSetup(loop_arch, loop_batch, size, True, True)
        ),
    }
    if args.data:
        weights = str(Path(args.weights).resolve()) if args.weights else None
        report["accuracy"] = recipe_runs(str(Path(args.data).resolve()), weights, args.quick)
    synchronize(inference_device())
    report["minutes"] = round((time.perf_counter() - started) / 60, 1)
    publish(report, markdown(report), args.out)


if __name__ == "__main__":
    main()
