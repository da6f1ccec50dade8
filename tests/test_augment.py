"""Augmentation strategies, CutMix/MixUp and the device-side input step."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from stages.common.config.training import AugmentParams
from stages.common.models.checkpoint import Preprocessing
from stages.common.models.inference import DeviceInput
from stages.common.training.augment import (
    AugmentedImages,
    BatchMixer,
    CropFlip,
    EpochIndices,
    _seeded,
    sample_transform,
    whole_batch,
)
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
    dataset = AugmentedImages.for_params(images, labels, augment(strategy=strategy), 0)
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
    dataset = AugmentedImages.for_params(images, labels, augment(strategy="aggressive"), 7)
    first = dataset[(3, 5)][0]
    torch.manual_seed(123)  # whatever the global generator did before
    for index in range(10):
        dataset[(3, index)]
    assert torch.equal(dataset[(3, 5)][0], first)
    assert not torch.equal(dataset[(4, 5)][0], first)  # another epoch, another draw
    other_seed = AugmentedImages.for_params(images, labels, augment(strategy="aggressive"), 8)
    assert not torch.equal(other_seed[(3, 5)][0], first)
    batch, _ = dataset.__getitems__([(3, 4), (3, 5)])
    assert torch.equal(batch[1], first)  # a batch's sample is the sample served alone
    state = torch.random.get_rng_state()
    dataset[(0, 0)]
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched


@pytest.mark.parametrize("strategy", ["aggressive", "randaugment", "trivialaugment"])
def test_seeding_the_cpu_generator_alone_draws_what_torch_manual_seed_drew(images, strategy):
    """The cheap per-sample seeding serves the augmentations the full seeding served."""
    transform = sample_transform(augment(strategy=strategy))
    image = images[0].permute(2, 0, 1)
    for seed in (0, 1, 2**40 + 3):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            expected = transform(image)
        assert torch.equal(_seeded(transform, image, seed), expected)


def test_aggressive_on_pil_images_draws_what_the_tensor_kernels_drew(images):
    """Its colour and warp run on PIL images for speed: the same random draws as the tensor
    kernels' (an image's jitter, angle, shift and erased box), the pixels within rounding."""
    transform = sample_transform(augment(strategy="aggressive"))
    assert isinstance(transform, v2.Compose)
    conversions = (v2.ToPILImage, v2.PILToTensor)
    steps = [step for step in transform.transforms if not isinstance(step, conversions)]
    assert len(steps) == 3  # jitter, warp, erasing: the same transforms on tensors
    on_tensors = v2.Compose(steps)
    differences = []
    for index, image in enumerate(images):
        chw = image.permute(2, 0, 1).contiguous()
        fast, reference = (_seeded(t, chw, index) for t in (transform, on_tensors))
        assert fast.shape == (3, 32, 32) and fast.dtype == torch.uint8
        differences.append((fast.float() - reference.float()).abs().mean().item())
    # other draws (a box erased elsewhere, another angle) differ by ten and more
    assert max(differences) < 3.0, differences


def test_epoch_indices_tag_each_index_with_the_epoch():
    sampler = EpochIndices(torch.utils.data.SequentialSampler(range(3)))
    sampler.set_epoch(2)
    assert list(sampler) == [(2, 0), (2, 1), (2, 2)] and len(sampler) == 3


def _reference_crop_flip(image: torch.Tensor, padding: int, top: int, left: int, flip: bool):
    """torchvision's reflect-padded crop and flip of one uint8 (H, W, 3) image."""
    chw = image.permute(2, 0, 1)
    padded = v2.functional.pad(chw, [padding], padding_mode="reflect")
    crop = v2.functional.crop(padded, top, left, *chw.shape[1:])
    return v2.functional.horizontal_flip(crop) if flip else crop


@pytest.mark.parametrize("padding", [0, 2, 4, 16])
def test_batch_crop_and_flip_match_torchvisions_per_image_crop_and_flip(images, padding):
    crop_flip = CropFlip(len(images), padding, "random", seed=3)
    index = torch.tensor([5, 0, 39, 5, 17])
    batch = crop_flip(images, index, epoch=2)
    offsets, flips = crop_flip.draws(2)
    assert batch.shape == (5, 3, 32, 32) and batch.dtype == torch.uint8
    for row, i in enumerate(index.tolist()):
        top, left = offsets[i].tolist()
        expected = _reference_crop_flip(images[i], padding, top, left, bool(flips[i]))
        assert torch.equal(batch[row], expected), (padding, i, top, left)
    assert {0, 2 * padding} <= set(offsets.flatten().tolist()) <= set(range(2 * padding + 1))


def test_random_flip_mirrors_about_half_and_alternate_flip_mirrors_every_other_epoch():
    count = 2000
    random = CropFlip(count, 0, "random", seed=1)
    alternate = CropFlip(count, 0, "alternate", seed=1)
    first, second, third = (alternate.draws(epoch)[1].clone() for epoch in (0, 1, 2))
    assert 0.45 < first.float().mean() < 0.55
    assert torch.equal(second, ~first) and torch.equal(third, first)
    assert torch.equal(first, random.draws(0)[1])  # alternating starts from the random draw
    random_first, random_second = (random.draws(epoch)[1].clone() for epoch in (0, 1))
    assert 0.45 < random_first.float().mean() < 0.55
    # independent draws: about a quarter of the images are flipped in both epochs
    assert 0.2 < (random_first & random_second).float().mean() < 0.3
    assert not CropFlip(count, 0, "none", seed=1).draws(0)[1].any()


@pytest.mark.parametrize(("strategy", "workers"), [("standard", 0), ("randaugment", 2)])
def test_a_loader_serves_whole_augmented_batches_that_do_not_depend_on_workers(
    images, strategy, workers
):
    labels = torch.arange(len(images)) % 10
    dataset = AugmentedImages.for_params(images, labels, augment(strategy=strategy), 0)
    assert (dataset.transform is None) == (strategy == "standard")

    def epoch_batches(worker_count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sampler = EpochIndices(torch.utils.data.SequentialSampler(range(len(images))))
        sampler.set_epoch(1)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=16,
            sampler=sampler,
            collate_fn=whole_batch,
            num_workers=worker_count,
        )
        return list(loader)

    batches = epoch_batches(workers)
    assert [len(x) for x, _ in batches] == [16, 16, 8]
    assert torch.equal(torch.cat([y for _, y in batches]), labels)
    served_alone = torch.stack([dataset[(1, i)][0] for i in range(len(images))])
    assert torch.equal(torch.cat([x for x, _ in batches]), served_alone)
    if workers:
        assert torch.equal(torch.cat([x for x, _ in epoch_batches(0)]), served_alone)
