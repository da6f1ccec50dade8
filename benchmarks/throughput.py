"""Throughput: the input pipeline at 224 px against the seed's, and the training loop against a
bare PyTorch loop on the same model and batch.

    python benchmarks/throughput.py --images 2048 --workers 2

Input pipeline, both producing normalised float batches of (B, 3, 224, 224):
- seed: PIL Resize(224) + RandomCrop(224, padding=28) + flip + ColorJitter + RandomRotation +
  ToTensor + RandomErasing + Normalize, per sample in DataLoader workers;
- ours: the 'aggressive' strategy (crop, flip, colour jitter, affine, erasing) on 32 px uint8
  tensors in the same number of workers, then one batched resize + normalise on the device.
Training loop: stages.common.engine.Trainer.train_epoch against forward/backward/step over
pre-made tensors, same model, batch size and optimizer.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as v1

from stages.common.augment import AugmentedImages, DeviceInput, sample_transform
from stages.common.dataset import PreparedData
from stages.common.engine import Trainer, TrainRun
from stages.common.freezing import Freezer
from stages.common.models import CIFAR_MEAN, CIFAR_STD, Preprocessing
from stages.common.params import AugmentParams, FreezingParams, TrainParams
from stages.common.sources import Split

REPEATS = 3


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
                v1.Normalize(CIFAR_MEAN, CIFAR_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), 0


def rate(batches, count: int, step=lambda batch: batch) -> float:
    started = time.perf_counter()
    seen = 0
    for images, _ in batches:
        seen += len(step(images))
    assert seen == count
    return count / (time.perf_counter() - started)


def input_pipeline(images: np.ndarray, labels: np.ndarray, workers: int, batch: int) -> dict:
    seed = DataLoader(SeedDataset(images), batch_size=batch, num_workers=workers)
    ours_dataset = AugmentedImages(
        torch.from_numpy(images),
        torch.from_numpy(labels),
        sample_transform(AugmentParams(strategy="aggressive")),
    )
    ours = DataLoader(ours_dataset, batch_size=batch, num_workers=workers)
    to_device = DeviceInput(Preprocessing(224, CIFAR_MEAN, CIFAR_STD), torch.device("cpu"), False)
    return {
        "seed_images_per_second": round(rate(seed, len(images)), 1),
        "ours_images_per_second": round(rate(ours, len(images), to_device), 1),
    }


def bare_loop(model, images, labels, batch: int, lr: float) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    started = time.perf_counter()
    for start in range(0, len(images) - batch + 1, batch):
        x = images[start : start + batch]
        loss = F.cross_entropy(model(x), labels[start : start + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (len(images) // batch) * batch / (time.perf_counter() - started)


def training_loop(images: np.ndarray, labels: np.ndarray, arch: str, batch: int) -> dict:
    params = TrainParams(
        epochs=1,
        batch_size=batch,
        workers=0,
        label_smoothing=0.0,
        grad_clip=None,
        warmup_epochs=0,
        scheduler="none",
        augment=AugmentParams(strategy="none"),
    )
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=10)
    split = Split(images, labels)
    data = PreparedData(
        [str(k) for k in range(10)], split, Split(images[:batch], labels[:batch]), split
    )
    run = TrainRun(
        "bench",
        params,
        model,
        Preprocessing(32, CIFAR_MEAN, CIFAR_STD),
        Freezer(model, FreezingParams(), "bench"),
        data,
        0,
        None,
        "bench",
    )
    trainer = Trainer(run)
    torch.manual_seed(0)
    bare_model = timm.create_model(arch, num_classes=10)
    tensors = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    ours, bare = 0.0, 0.0
    for repeat in range(REPEATS):  # alternate, keep the best of each: warm-up and noise even out
        ours = max(ours, trainer.train_epoch(repeat)["train/images_per_second"])
        bare = max(bare, bare_loop(bare_model, tensors, torch.from_numpy(labels), batch, params.lr))
    return {
        "arch": arch,
        "batch": batch,
        "ours_images_per_second": round(ours, 1),
        "bare_images_per_second": round(bare, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--arch", default="resnet18")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images).astype(np.int64)
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
                "input_pipeline_224px": input_pipeline(images, labels, args.workers, args.batch),
                "training_loop_32px": training_loop(images, labels, args.arch, args.batch),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
