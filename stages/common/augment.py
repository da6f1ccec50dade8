"""Augmentation: per-sample at 32 px on uint8 tensors, then batched on the training device.

The per-sample part runs in DataLoader workers on 32x32 uint8 images (cheap); resizing to the
model's resolution, normalisation and CutMix/MixUp run once per batch on the device. Doing the
upsampling in the workers (the seed's way) moves 49x more pixels through the CPU at 224 px.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms import v2

from stages.common.models import Preprocessing
from stages.common.params import AugmentParams


def sample_transform(params: AugmentParams) -> v2.Transform:
    """The per-sample augmentation of ``params.strategy`` on a uint8 (3, 32, 32) tensor."""
    if params.strategy == "none":
        return v2.Identity()
    standard = [v2.RandomCrop(32, padding=4, padding_mode="reflect"), v2.RandomHorizontalFlip()]
    extra: dict[str, list[v2.Transform]] = {
        "standard": [],
        "aggressive": [
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
            v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.RandomErasing(p=0.25, scale=(0.02, 0.2)),
        ],
        "randaugment": [
            v2.RandAugment(num_ops=params.randaugment_ops, magnitude=params.randaugment_magnitude)
        ],
        "trivialaugment": [v2.TrivialAugmentWide()],
    }
    return v2.Compose(standard + extra[params.strategy])


class AugmentedImages(Dataset):
    """uint8 images (N, 32, 32, 3) in memory, served as augmented uint8 (3, 32, 32) tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform):
        self.images = images.permute(0, 3, 1, 2)  # a view: NHWC storage, CHW samples
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index].contiguous()), self.labels[index]


class BatchMixer:
    """CutMix and/or MixUp on a batch, applied to a share ``mix_prob`` of the batches."""

    def __init__(self, params: AugmentParams, num_classes: int) -> None:
        choices: list[v2.Transform] = []
        if params.cutmix > 0:
            choices.append(v2.CutMix(alpha=params.cutmix, num_classes=num_classes))
        if params.mixup > 0:
            choices.append(v2.MixUp(alpha=params.mixup, num_classes=num_classes))
        self.mix = v2.RandomChoice(choices) if choices else None
        self.probability = params.mix_prob
        self.num_classes = num_classes

    @property
    def enabled(self) -> bool:
        return self.mix is not None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        """Soft (N, classes) targets when mixing is on; hard labels otherwise."""
        if self.mix is None:
            return images, labels
        if torch.rand(()) < self.probability:
            return self.mix(images, labels)
        return images, F.one_hot(labels, self.num_classes).to(images.dtype)


class DeviceInput:
    """uint8 batch -> resized, normalised float batch on the device, channels_last if asked."""

    def __init__(
        self, preprocessing: Preprocessing, device: torch.device, channels_last: bool
    ) -> None:
        self.size = preprocessing.img_size
        self.mode = preprocessing.interpolation
        self.mean = torch.tensor(preprocessing.mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(preprocessing.std, device=device).view(1, 3, 1, 1) * 255
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def batches(self, images: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        """Model-ready batches of uint8 NHWC ``images`` (no augmentation), in order."""
        for start in range(0, len(images), batch_size):
            yield self(torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: uint8 (N, 3, H, W) on any device."""
        images = images.to(self.device, non_blocking=True).float()
        if images.shape[-1] != self.size or images.shape[-2] != self.size:
            images = F.interpolate(
                images, size=(self.size, self.size), mode=self.mode, align_corners=False
            )
        images = (images - self.mean) / self.std
        return images.contiguous(memory_format=self.memory_format)
