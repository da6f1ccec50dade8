"""The training batch sources: batches gathered on the device against the DataLoader's, and
the training loss read back one step late."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from stages.common.plumbing.machine import Distributed
from stages.common.training.augment import AugmentedImages
from stages.common.training.lagged_losses import LaggedLosses, StepLoss
from stages.common.training.loader import (
    DeviceBatches,
    epoch_sampler,
    training_batches,
    training_loader,
)
from tests import synthetic
from tests.test_augment import augment


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(synthetic.make_images(5, 0)[0])  # (50, 32, 32, 3) uint8


@pytest.mark.parametrize(("strategy", "flip"), [("standard", "alternate"), ("none", "random")])
@pytest.mark.parametrize("rank", [0, 1])
def test_device_batches_are_the_loaders_batches_bit_for_bit(images, strategy, flip, rank):
    labels = torch.arange(len(images)) % 10
    dataset = AugmentedImages.for_params(images, labels, augment(strategy=strategy, flip=flip), 3)
    distributed = Distributed(rank=rank, world_size=2)
    on_device = training_batches(
        dataset, 8, epoch_sampler(len(images), distributed, 3), 0, torch.device("cpu")
    )
    assert isinstance(on_device, DeviceBatches)
    sampler = epoch_sampler(len(images), distributed, 3)
    loader = training_loader(dataset, 8, sampler, 0, torch.device("cpu"))
    for epoch in (0, 1, 2):
        on_device.sampler.set_epoch(epoch)
        sampler.set_epoch(epoch)
        served = list(on_device)
        expected = list(loader)
        assert len(served) == len(on_device) == len(expected) == 3  # 25 images a rank, 8 a batch
        for (images_d, labels_d), (images_l, labels_l) in zip(served, expected, strict=True):
            assert torch.equal(images_d, images_l) and torch.equal(labels_d, labels_l)
    # the epochs differ: a new shuffle, new crops
    on_device.sampler.set_epoch(0)
    first = next(iter(on_device))[0]
    on_device.sampler.set_epoch(1)
    assert not torch.equal(first, next(iter(on_device))[0])


def test_per_sample_augmentation_keeps_the_dataloader_and_its_workers(images):
    labels = torch.arange(len(images)) % 10
    dataset = AugmentedImages.for_params(images, labels, augment(strategy="randaugment"), 3)
    sampler = epoch_sampler(len(images), Distributed(), 3)
    source = training_batches(dataset, 8, sampler, 2, torch.device("cpu"))
    assert isinstance(source, DataLoader) and source.num_workers == 2


def losses(values: list[float]) -> list[StepLoss]:
    return [StepLoss(torch.tensor(value), 10, step, 0.1) for step, value in enumerate(values)]


def test_lagged_losses_read_each_loss_one_step_late_and_all_of_them_at_the_end():
    seen: list[tuple[float, int]] = []
    lagged = LaggedLosses(lambda value, loss: seen.append((value, loss.step)))
    steps = losses([2.0, 1.0, 3.0])
    assert lagged.add(steps[0]) is False and seen == []
    assert lagged.add(steps[1]) is True and seen == [(2.0, 0)]
    assert lagged.mean == 2.0
    assert lagged.add(steps[2]) is True and seen == [(2.0, 0), (1.0, 1)]
    assert lagged.finish() == pytest.approx(2.0) and lagged.seen == 30
    assert seen == [(2.0, 0), (1.0, 1), (3.0, 2)]


def test_a_check_that_raises_stops_within_a_step_of_the_bad_loss():
    def check(value: float, loss: StepLoss) -> None:
        if value != value:
            raise RuntimeError(f"step {loss.step}")

    lagged = LaggedLosses(check)
    steps = losses([1.0, float("nan"), 1.0, 1.0])
    lagged.add(steps[0])
    lagged.add(steps[1])
    with pytest.raises(RuntimeError, match="step 1"):
        lagged.add(steps[2])
    lone = LaggedLosses(check)
    lone.add(losses([float("nan")])[0])
    with pytest.raises(RuntimeError, match="step 0"):
        lone.finish()  # the last step's loss is read at the epoch's end
