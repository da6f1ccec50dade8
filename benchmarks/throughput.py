"""Throughput: the input pipeline at 224 px against the seed's, and the training loop against a
bare PyTorch loop on the same model and batch, on this machine's device (CUDA when present).

    python -m benchmarks.throughput --images 2048 --workers 2

Input pipeline, both producing normalised float batches of (B, 3, 224, 224) on the device:
- seed: PIL Resize(224) + RandomCrop(224, padding=28) + flip + ColorJitter + RandomRotation +
  ToTensor + RandomErasing + Normalize, per sample in DataLoader workers, then copied over;
- ours: the 'aggressive' strategy (crop, flip, colour jitter, affine, erasing) on 32 px uint8
  tensors in the same number of workers, then one batched resize + normalise on the device.
Every strategy of ours, through the batch source training uses (gathered on the device for
none/standard; DataLoader workers for the rest), to normalised 224 px batches on the device:
what each can feed a model (compare with benchmarks.gpu's training images/s).
Training loop: stages.common.training.trainer.Trainer.train_epoch against forward/backward/step over
pre-made device tensors, same model, batch size, optimizer, autocast and memory format.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, SequentialSampler
from torchvision import transforms as v1

from benchmarks.output import publish
from stages.common.config.params import load_params
from stages.common.config.training import FreezingParams, TrainParams
from stages.common.data.cifar10 import MEAN, STD
from stages.common.data.prepared import PreparedData, Split
from stages.common.models.checkpoint import Preprocessing
from stages.common.models.inference import DeviceInput, inference_device
from stages.common.plumbing.machine import Distributed, autocast
from stages.common.training.augment import AugmentedImages, EpochIndices, whole_batch
from stages.common.training.freezing import Freezer
from stages.common.training.loader import epoch_sampler, training_batches
from stages.common.training.trainer import Trainer, TrainRun

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 3
STRATEGIES = ["none", "standard", "aggressive", "randaugment", "trivialaugment"]


class SeedDataset(Dataset):
    """The seed's per-sample pipeline: PIL upsampling first, everything else at 224 px."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self.transform = v1.Compose(
            [
                v1.Resize(224),
                v1.RandomCrop(224, padding=28),
                v1.RandomHorizontalFlip(),
                v1.ColorJitter(0.4, 0.4, 0.4, 0.1),
                v1.RandomRotation(15),
                v1.ToTensor(),
                v1.RandomErasing(p=0.25),
                v1.Normalize(MEAN, STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), 0


def synchronize(on: torch.device) -> None:
    if on.type == "cuda":
        torch.cuda.synchronize(on)


def machine() -> str:
    here = inference_device()
    name = torch.cuda.get_device_name(here) if here.type == "cuda" else platform.processor()
    return f"{name or platform.machine()}, {torch.get_num_threads()} CPU threads, {here.type}"


def shipped_train_params(**changes) -> TrainParams:
    """params.yaml's `train` section with ``changes`` (nested `augment` keys merged)."""
    train = load_params(ROOT / "params.yaml").train
    augment = train.augment.model_copy(update=changes.pop("augment", {}))
    return train.model_copy(update={**changes, "augment": augment})


def rate(batches, count: int, on: torch.device, step=lambda batch: batch) -> float:
    """Images per second through ``step`` over ``batches`` (device work included)."""
    synchronize(on)
    started = time.perf_counter()
    seen = 0
    for images, _ in batches:
        seen += len(step(images))
    synchronize(on)
    assert seen == count
    return count / (time.perf_counter() - started)


def input_pipeline(images: np.ndarray, labels: np.ndarray, workers: int, batch: int) -> dict:
    on = inference_device()
    pin = on.type == "cuda"
    seed = DataLoader(SeedDataset(images), batch_size=batch, num_workers=workers, pin_memory=pin)
    augment = shipped_train_params(augment={"strategy": "aggressive"}).augment
    ours_dataset = AugmentedImages.for_params(
        torch.from_numpy(images), torch.from_numpy(labels), augment, seed=0
    )
    ours = DataLoader(
        ours_dataset,
        batch_size=batch,
        sampler=EpochIndices(SequentialSampler(range(len(images)))),
        collate_fn=whole_batch,
        num_workers=workers,
        pin_memory=pin,
    )
    to_device = DeviceInput(Preprocessing(img_size=224, mean=MEAN, std=STD), on)
    seed_rate = rate(seed, len(images), on, lambda x: x.to(on, non_blocking=True))
    ours_rate = rate(ours, len(images), on, to_device)
    return {
        "seed_images_per_second": round(seed_rate, 1),
        "ours_images_per_second": round(ours_rate, 1),
        "speedup": round(ours_rate / seed_rate, 2),
    }


def strategy_rates(images: np.ndarray, labels: np.ndarray, workers: int, batch: int) -> dict:
    """Images/s of each augmentation strategy from the batch source training uses to
    normalised 224 px batches on the device, over one epoch after a warm-up one."""
    on = inference_device()
    to_device = DeviceInput(Preprocessing(img_size=224, mean=MEAN, std=STD), on)
    rates = {}
    for strategy in STRATEGIES:
        augment = shipped_train_params(augment={"strategy": strategy}).augment
        dataset = AugmentedImages.for_params(
            torch.from_numpy(images), torch.from_numpy(labels), augment, seed=0
        )
        sampler = epoch_sampler(len(images), Distributed(), seed=0)
        source = training_batches(dataset, batch, sampler, workers, on)
        usable = len(images) // batch * batch
        rate(source, usable, on, to_device)  # warm-up: workers started, kernels chosen
        sampler.set_epoch(1)
        rates[strategy] = round(rate(source, usable, on, to_device), 1)
    return {"workers": workers, "batch": batch, "images_per_second": rates}


@dataclass
class LoopSetup:
    arch: str
    batch: int
    img_size: int = 32
    amp: bool = False
    channels_last: bool = False
    compile: bool = False


def bare_loop(model, images, labels, setup: LoopSetup, lr: float, on: torch.device) -> float:
    """Images per second of the plainest loop over tensors already on the device."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    forward = torch.compile(model) if setup.compile else model
    model.train()
    synchronize(on)
    started = time.perf_counter()
    steps = len(images) // setup.batch
    for start in range(0, steps * setup.batch, setup.batch):
        with autocast(on, setup.amp):
            logits = forward(images[start : start + setup.batch])
        loss = F.cross_entropy(logits.float(), labels[start : start + setup.batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(on)
    return steps * setup.batch / (time.perf_counter() - started)


def trainer(images: np.ndarray, labels: np.ndarray, setup: LoopSetup) -> Trainer:
    params = shipped_train_params(
        epochs=REPEATS,
        batch_size=setup.batch,
        workers="auto" if inference_device().type == "cuda" else 0,
        warmup_epochs=0.0,
        grad_clip=None,
        label_smoothing=0.0,
        ema_decay=None,
        amp=setup.amp,
        channels_last=setup.channels_last,
        compile=setup.compile,
        augment={"strategy": "none", "cutmix": 0.0, "mixup": 0.0},
    )
    torch.manual_seed(0)
    model = timm.create_model(setup.arch, num_classes=10)
    split = Split(images, labels)
    head = Split(images[: setup.batch], labels[: setup.batch])
    data = PreparedData([str(k) for k in range(10)], split, head, head)
    run = TrainRun(
        name="bench",
        params=params,
        lr=params.lr,
        model=model,
        preprocessing=Preprocessing(img_size=setup.img_size, mean=MEAN, std=STD),
        freezer=Freezer(model, FreezingParams(strategy="none", groups=0, schedule=[]), "bench"),
        data=data,
        seed=0,
        state_path=Path("/nonexistent/bench-resume.safetensors"),
        fingerprint="bench",
    )
    return Trainer(run)


def training_loop(images: np.ndarray, labels: np.ndarray, setup: LoopSetup) -> dict:
    """The Trainer's epoch against the bare loop, alternated; the best of each counts."""
    on = inference_device()
    ours_trainer = trainer(images, labels, setup)
    torch.manual_seed(0)
    bare_model = timm.create_model(setup.arch, num_classes=10).to(on)
    if setup.channels_last:
        bare_model = bare_model.to(memory_format=torch.channels_last)
    to_device = DeviceInput(
        Preprocessing(img_size=setup.img_size, mean=MEAN, std=STD),
        on,
        setup.channels_last,
    )
    tensors = to_device(torch.from_numpy(images).permute(0, 3, 1, 2))
    targets = torch.from_numpy(labels).to(on)
    ours, bare = 0.0, 0.0
    for repeat in range(REPEATS):  # alternate so warm-up and noise even out
        ours = max(ours, ours_trainer.train_epoch(repeat)[0]["train/images_per_second"])
        bare = max(bare, bare_loop(bare_model, tensors, targets, setup, 1e-3, on))
    return {
        **setup.__dict__,
        "ours_images_per_second": round(ours, 1),
        "bare_images_per_second": round(bare, 1),
        "overhead_percent": round(100 * (bare / ours - 1), 1),
    }


def markdown(result: dict) -> str:
    feed, loop = result["input_pipeline_224px"], result["training_loop_32px"]
    strategies = result["strategies_224px"]
    return "\n".join(
        [
            f"### Benchmarks ({result['machine']})",
            "",
            "| measure | ours | baseline | ratio |",
            "|---|---:|---:|---:|",
            f"| input pipeline at 224 px, images/s (baseline: the seed's) | "
            f"{feed['ours_images_per_second']} | {feed['seed_images_per_second']} | "
            f"{feed['speedup']}x |",
            f"| training loop {loop['arch']} at 32 px, images/s (baseline: a bare loop) | "
            f"{loop['ours_images_per_second']} | {loop['bare_images_per_second']} | "
            f"{loop['overhead_percent']}% overhead |",
            "",
            f"| strategy ({strategies['workers']} workers where per-sample) | 224 px images/s |",
            "|---|---:|",
            *(
                f"| {strategy} | {value} |"
                for strategy, value in strategies["images_per_second"].items()
            ),
        ]
    )


def random_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, count).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    images, labels = random_images(args.images)
    result = {
        "machine": machine(),
        "input_pipeline_224px": input_pipeline(images, labels, args.workers, args.batch),
        "strategies_224px": strategy_rates(images, labels, args.workers, args.batch),
        "training_loop_32px": training_loop(images, labels, LoopSetup(args.arch, args.batch)),
    }
    publish(result, markdown(result), args.out)


if __name__ == "__main__":
    main()
