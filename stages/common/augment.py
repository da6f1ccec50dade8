"""Training augmentation: per-sample at 32 px on uint8 tensors, then CutMix/MixUp per batch.

The per-sample part runs in DataLoader workers on 32x32 uint8 images (cheap); resizing to the
model's resolution and normalisation run once per batch on the device (inference.DeviceInput).
Doing the upsampling in the workers (the seed's way) moves 49x more pixels through the CPU at
224 px.

Every sample's random draws are seeded from (seed, epoch, index), so the augmented images do
not depend on how many workers there are or which worker serves which sample: the same params
give the same run on a 2-core laptop and a 32-core server, and a resumed run repeats exactly
the epochs an uninterrupted one would have run.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from stages.common.params import AugmentParams

_SEED_STRIDE = 1_000_003


def sample_transform(params: AugmentParams) -> v2.Transform:
    """The per-sample augmentation of ``params.strategy`` on a uint8 (3, 32, 32) tensor."""
    if params.strategy == "none":
        return v2.Identity()
    crop: list[v2.Transform] = (
        [v2.RandomCrop(32, padding=params.crop_padding, padding_mode="reflect")]
        if params.crop_padding
        else []
    )
    standard = [*crop, v2.RandomHorizontalFlip()]
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


class EpochIndices(Sampler[tuple[int, int]]):
    """(epoch, index) pairs from an index sampler, so that a dataset can seed each sample
    from its epoch even in persistent worker processes."""

    def __init__(self, indices: Sampler[int]) -> None:
        self.indices = indices
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        set_epoch = getattr(self.indices, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in self.indices)

    def __len__(self) -> int:
        return len(self.indices)  # type: ignore[arg-type]


class AugmentedImages(Dataset):
    """uint8 images (N, 32, 32, 3) in memory, served as augmented uint8 (3, 32, 32) tensors.

    Indexed by (epoch, index) (see :class:`EpochIndices`); each sample's augmentation draws
    from a generator seeded by (seed, epoch, index).
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform, seed: int
    ) -> None:
        self.images = images.permute(0, 3, 1, 2)  # a view: NHWC storage, CHW samples
        self.labels = labels
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        # v2 transforms draw from torch's global generator; seeding it per sample (and putting
        # it back afterwards) makes the draw independent of the worker and of the samples
        # served before it, and leaves the training loop's own draws alone
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * _SEED_STRIDE + epoch) * _SEED_STRIDE + index)
            image = self.transform(self.images[index].contiguous())
        return image, self.labels[index]


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

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft (N, classes) targets when mixing is on; hard labels otherwise."""
        if self.mix is None:
            return images, labels
        if torch.rand(()) < self.probability:
            return self.mix(images, labels)
        return images, F.one_hot(labels, self.num_classes).to(images.dtype)
