"""Training augmentation: crop and flip per batch, the other per-sample work at 32 px on uint8
tensors, then CutMix/MixUp per batch.

The reflect-padded random crop and the horizontal flip of a whole batch are one gather from the
stored images (:class:`CropFlip`), with no per-sample Python, on whichever device holds them
(training.loader.DeviceBatches: the training device); the heavier strategies' extra transforms
(colour, RandAugment, ...) run per sample after it, in DataLoader workers. Resizing to
the model's resolution and normalisation run once per batch on the device
(inference.DeviceInput). Doing the upsampling in the workers (the seed's way) moves 49x more
pixels through the CPU at 224 px.

Every random draw is seeded from (seed, epoch, index): the crop offsets and flips of an epoch
are one table drawn from (seed, epoch), the per-sample transforms from (seed, epoch, index). So
the augmented images do not depend on how many workers there are or which worker serves which
sample: the same params give the same run on a 2-core laptop and a 32-core server, and a resumed
run repeats exactly the epochs an uninterrupted one would have run.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from stages.common.config.training import AugmentParams

_SEED_STRIDE = 1_000_003


def sample_transform(params: AugmentParams) -> v2.Transform | None:
    """The per-sample augmentation of ``params.strategy`` after crop and flip (None when the
    strategy has none: ``none`` and ``standard``), on a uint8 (3, 32, 32) tensor."""
    extra: dict[str, list[v2.Transform]] = {
        # the colour and the affine warp on a PIL image: its hue shift and warp at 32 px are
        # 3x and 5x faster than the tensor kernels', 1.6x the images/s with the conversions
        # (docs/measurements.md); the draws are the same, the pixels within rounding
        "aggressive": [
            v2.ToPILImage(),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
            v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.PILToTensor(),
            v2.RandomErasing(p=0.25, scale=(0.02, 0.2)),
        ],
        "randaugment": [
            v2.RandAugment(num_ops=params.randaugment_ops, magnitude=params.randaugment_magnitude)
        ],
        "trivialaugment": [v2.TrivialAugmentWide()],
    }
    return v2.Compose(extra[params.strategy]) if params.strategy in extra else None


class CropFlip:
    """A random crop of a reflect-padded image and a horizontal flip, for a whole batch at once.

    Same distribution as ``v2.RandomCrop(size, padding, padding_mode="reflect")`` followed by
    ``v2.RandomHorizontalFlip()``, drawn per epoch as one table over the data set. ``flip``:
    ``random`` flips each image with probability 1/2 every epoch; ``alternate`` (airbench's
    alternating flip) flips a random half in the first epoch and then mirrors every image's
    previous choice, so that each image is seen both ways in every two epochs; ``none`` never
    flips (strategy ``none``, with ``padding`` 0, leaves the images alone).
    """

    def __init__(self, count: int, padding: int, flip: str, seed: int) -> None:
        self.count, self.padding, self.flip, self.seed = count, padding, flip, seed
        self._drawn: tuple[torch.device, int] | None = None  # what _draws holds: where, when
        self._draws: tuple[torch.Tensor, torch.Tensor] = (torch.empty(0), torch.empty(0))

    def draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image's (row, column) crop offset in the padded image and whether it flips."""
        flips, offsets = self._random_draws(epoch)
        if self.flip == "alternate":
            flips = self._random_draws(0)[0] ^ bool(epoch % 2)
        elif self.flip == "none":
            flips = torch.zeros(self.count, dtype=torch.bool)
        return offsets, flips

    def _random_draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Epoch ``epoch``'s random flips, then its offsets, from one generator: alternating
        flips reuse epoch 0's flips, which must not be the draws its offsets came from."""
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        flips = torch.rand(self.count, generator=generator) < 0.5
        offsets = torch.randint(0, 2 * self.padding + 1, (self.count, 2), generator=generator)
        return flips, offsets

    def on(self, device: torch.device, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`draws` on ``device``, drawn once an epoch (on the CPU, so that every device
        crops alike)."""
        if self._drawn != (device, epoch):
            offsets, flips = self.draws(epoch)
            self._drawn, self._draws = (device, epoch), (offsets.to(device), flips.to(device))
        return self._draws

    def __call__(self, images: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
        """uint8 (B, 3, H, W) crops of ``images[index]`` (uint8 NHWC, the whole data set), on
        the images' device (``index`` on it too)."""
        offsets, flips = self.on(images.device, epoch)
        height, width = images.shape[1:3]
        rows = _reflect(
            offsets[index, :1] - self.padding + torch.arange(height, device=images.device), height
        )
        columns = torch.arange(width, device=images.device).expand(len(index), width)
        columns = torch.where(flips[index, None], columns.flip(1), columns)
        columns = _reflect(offsets[index, 1:] - self.padding + columns, width)
        batch = images[index[:, None, None], rows[:, :, None], columns[:, None, :]]
        return batch.permute(0, 3, 1, 2).contiguous()


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * _SEED_STRIDE + epoch


def _reflect(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Indices into a row of ``size`` for positions off its edges, mirrored without repeating
    the edge (torch's and torchvision's "reflect" padding)."""
    positions = positions.abs()
    return torch.where(positions >= size, 2 * (size - 1) - positions, positions)


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


def whole_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The DataLoader's collate_fn for :class:`AugmentedImages`, which fetches whole batches."""
    return batch


class AugmentedImages(Dataset):
    """uint8 images (N, 32, 32, 3) in memory, served as augmented uint8 (3, 32, 32) tensors.

    Indexed by (epoch, index) (see :class:`EpochIndices`). A DataLoader fetches whole batches
    (``__getitems__``, with ``collate_fn=whole_batch``): crop and flip by :class:`CropFlip`,
    then ``transform`` per sample, drawing from a generator seeded by (seed, epoch, index).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        crop_flip: CropFlip,
        transform: v2.Transform | None,
        seed: int,
    ) -> None:
        self.images = images
        self.labels = labels
        self.crop_flip = crop_flip
        self.transform = transform
        self.seed = seed

    @classmethod
    def for_params(
        cls, images: torch.Tensor, labels: torch.Tensor, params: AugmentParams, seed: int
    ) -> AugmentedImages:
        """The augmentation ``params`` ask for, over ``images`` and ``labels``."""
        standard = params.strategy != "none"
        crop_flip = CropFlip(
            len(labels),
            params.crop_padding if standard else 0,
            params.flip if standard else "none",
            seed,
        )
        return cls(images, labels, crop_flip, sample_transform(params), seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, keys: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch = keys[0][0]
        index = torch.tensor([key[1] for key in keys])
        batch = self.crop_flip(self.images, index, epoch)
        if self.transform is not None:
            batch = torch.stack(
                [
                    _seeded(self.transform, image, self._sample_seed(epoch, int(i)))
                    for image, i in zip(batch, index)
                ]
            )
        return batch, self.labels[index]

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([key])
        return images[0], labels[0]

    def _sample_seed(self, epoch: int, index: int) -> int:
        return _epoch_seed(self.seed, epoch) * _SEED_STRIDE + index


def _seeded(transform: v2.Transform, image: torch.Tensor, seed: int) -> torch.Tensor:
    """``transform(image)`` drawing from ``seed``. v2 transforms draw from torch's global CPU
    generator; seeding it per sample (and putting its state back afterwards) makes the draw
    independent of the worker and of the samples served before it, and leaves the training
    loop's own draws alone. The CPU generator alone: ``torch.manual_seed`` seeds every
    accelerator's generator too, ~110 us a call where this takes ~2 us, more than half of what
    TrivialAugment costs an image at 32 px."""
    generator = torch.default_generator
    state = generator.get_state()
    generator.manual_seed(seed)
    try:
        return transform(image)
    finally:
        generator.set_state(state)


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
