"""The training set's batches, one source for the whole run.

Augmentation with per-sample work (randaugment, trivialaugment, aggressive) runs in DataLoader
workers that persist across epochs. Without it (``none``, ``standard``) there is nothing for a
worker to do but crop and flip, one gather per batch: :class:`DeviceBatches` copies the uint8
images to the training device once and gathers every batch there, so that a GPU never waits for
the host to crop, pin and copy a batch (the ~6 MB of a 2,000-image batch at 32 px, 24 times an
epoch). Both serve the same batches bit for bit: shuffling is a function of (seed, epoch) and
augmentation of (seed, epoch, index), so neither the worker count nor the source changes
anything but speed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from stages.common.plumbing.machine import Distributed
from stages.common.training.augment import AugmentedImages, EpochIndices, whole_batch

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_sampler(images: int, distributed: Distributed, seed: int) -> EpochIndices:
    """This process's share of each epoch's seeded shuffle (all of it in a plain run); a
    batch's remainder is dropped."""
    return EpochIndices(
        DistributedSampler(
            range(images),
            num_replicas=distributed.world_size,
            rank=distributed.rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
    )


def training_loader(
    dataset: Dataset, batch: int, sampler: EpochIndices, workers: int, device: torch.device
) -> DataLoader:
    """Whole batches of ``dataset`` in ``sampler``'s order, on ``workers`` processes."""
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        drop_last=True,
        collate_fn=whole_batch,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


class DeviceBatches:
    """Whole batches of ``dataset`` (an :class:`AugmentedImages` without per-sample transforms)
    in ``sampler``'s order, cropped and flipped on ``device`` from a copy of its images there:
    what :func:`training_loader` serves, without a worker, a pinned copy or a host-to-device
    transfer per batch."""

    def __init__(
        self, dataset: AugmentedImages, batch: int, sampler: EpochIndices, device: torch.device
    ) -> None:
        self.images = dataset.images.to(device)
        self.labels = dataset.labels.to(device)
        self.crop_flip = dataset.crop_flip
        self.batch = batch
        self.sampler = sampler
        self.device = device

    def __len__(self) -> int:
        return len(self.sampler) // self.batch

    def __iter__(self) -> Iterator[Batch]:
        order = torch.tensor(list(self.sampler.indices), dtype=torch.long).to(self.device)
        epoch = self.sampler.epoch
        for start in range(0, len(self) * self.batch, self.batch):
            yield self.fetch(order[start : start + self.batch], epoch)

    def fetch(self, index: torch.Tensor, epoch: int) -> Batch:
        """The batch of images ``index`` (on the device) as epoch ``epoch`` augments them."""
        return self.crop_flip(self.images, index, epoch), self.labels[index]


def training_batches(
    dataset: AugmentedImages,
    batch: int,
    sampler: EpochIndices,
    workers: int,
    device: torch.device,
) -> DeviceBatches | DataLoader:
    """The run's batch source: gathered on the device when ``dataset`` has no per-sample
    work, else a DataLoader on ``workers`` processes."""
    if dataset.transform is None:
        return DeviceBatches(dataset, batch, sampler, device)
    return training_loader(dataset, batch, sampler, workers, device)
