"""Augmentation strategies, CutMix/MixUp and the device-side input step."""

from __future__ import annotations

import pytest
import torch

from stages.common.augment import AugmentedImages, BatchMixer, EpochIndices, sample_transform
from stages.common.checkpoint import Preprocessing
from stages.common.inference import DeviceInput
from stages.common.params import AugmentParams
from tests import synthetic
from tests.conftest import shipped

SHIPPED = shipped().train.augment


def augment(**values) -> AugmentParams:
    return AugmentParams.model_validate({**SHIPPED.model_dump(), **values})


STRATEGIES = ["none", "standard", "aggressive", "randaugment", "trivialaugment"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(synthetic.make_images(4, 0)[0])  # (40, 32, 32, 3) uint8


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_keep_uint8_32px_and_labels(images, strategy):
    labels = torch.arange(len(images)) % 10
    dataset = AugmentedImages(images, labels, sample_transform(augment(strategy=strategy)), 0)
    outputs = [dataset[(0, i)] for i in range(len(dataset))]
    for index, (image, label) in enumerate(outputs):
        assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
        assert label.item() == labels[index].item()
    changed = sum(
        not torch.equal(image, images[i].permute(2, 0, 1)) for i, (image, _) in enumerate(outputs)
    )
    if strategy == "none":
        assert changed == 0
    else:
        assert changed >= len(images) // 2


def test_randaugment_magnitude_changes_the_result(images):
    sample = images[0].permute(2, 0, 1).contiguous()
    results = []
    for magnitude in (0, 30):
        torch.manual_seed(1)
        params = augment(strategy="randaugment", randaugment_magnitude=magnitude)
        results.append(sample_transform(params)(sample))
    assert not torch.equal(results[0], results[1])


@pytest.mark.parametrize(("cutmix", "mixup"), [(1.0, 0.0), (0.0, 0.4), (1.0, 0.4)])
def test_mixing_gives_soft_labels(cutmix, mixup):
    torch.manual_seed(0)
    mixer = BatchMixer(augment(cutmix=cutmix, mixup=mixup), num_classes=10)
    batch = torch.rand(8, 3, 32, 32)
    labels = torch.arange(8)
    mixed, targets = mixer(batch, labels)
    assert mixed.shape == batch.shape and targets.shape == (8, 10)
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    assert (targets.max(1).values < 1).any()  # at least one image really is a mix


def test_no_mixing_keeps_hard_labels_and_probability_zero_gives_one_hot():
    labels = torch.arange(4)
    plain = BatchMixer(augment(), 10)
    assert plain(torch.zeros(4, 3, 8, 8), labels)[1] is labels
    never = BatchMixer(augment(cutmix=1.0, mix_prob=0.0), 10)
    _, targets = never(torch.zeros(4, 3, 8, 8), labels)
    torch.testing.assert_close(targets, torch.eye(10)[:4])


def test_device_input_resizes_and_normalises():
    preprocessing = Preprocessing(img_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    step = DeviceInput(preprocessing, torch.device("cpu"), channels_last=True)
    batch = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    out = step(batch)
    assert out.shape == (2, 3, 64, 64) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, torch.full_like(out, (1.0 - 0.5) / 0.25))
    plain = Preprocessing(img_size=32, mean=(0, 0, 0), std=(1, 1, 1))
    native = DeviceInput(plain, torch.device("cpu"), False)
    assert native(batch).shape == (2, 3, 32, 32)


def test_a_samples_augmentation_depends_on_seed_epoch_and_index_only(images):
    """Not on the worker or on the samples drawn before it: the same run with any number of
    DataLoader workers, and a resumed run repeats the uninterrupted one."""
    labels = torch.zeros(len(images), dtype=torch.long)
    dataset = AugmentedImages(images, labels, sample_transform(augment(strategy="aggressive")), 7)
    first = dataset[(3, 5)][0]
    torch.manual_seed(123)  # whatever the global generator did before
    for index in range(10):
        dataset[(3, index)]
    assert torch.equal(dataset[(3, 5)][0], first)
    assert not torch.equal(dataset[(4, 5)][0], first)  # another epoch, another draw
    assert not torch.equal(AugmentedImages(images, labels, dataset.transform, 8)[(3, 5)][0], first)
    state = torch.random.get_rng_state()
    dataset[(0, 0)]
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched


def test_epoch_indices_tag_each_index_with_the_epoch():
    sampler = EpochIndices(torch.utils.data.SequentialSampler(range(3)))
    sampler.set_epoch(2)
    assert list(sampler) == [(2, 0), (2, 1), (2, 2)] and len(sampler) == 3
