"""The training set's loader: one for the whole run, its workers persisting across epochs.
Shuffling is a function of (seed, epoch) and augmentation of (seed, epoch, index), so the
worker count changes nothing but speed."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from stages.common.plumbing.machine import Distributed
from stages.common.training.augment import EpochIndices, whole_batch


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
