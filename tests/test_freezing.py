"""Which parameters train at which epoch, for every strategy and architecture."""

from __future__ import annotations

import itertools

import pytest
import timm
import torch
from torch import nn

from stages.common.config.training import FreezingParams
from stages.common.plumbing.errors import ParamsError
from stages.common.training.freezing import Freezer, freeze_batchnorm_stats, parameter_groups
from stages.common.training.optim import build_optimizer, build_scheduler
from tests.conftest import TINY_MODELS, shipped

ARCHS = sorted(TINY_MODELS.values())


def make(arch: str) -> nn.Module:
    return (
        timm.create_model(arch, pretrained=False, num_classes=10, img_size=32)
        if "vit" in arch
        else timm.create_model(arch, pretrained=False, num_classes=10)
    )


def trainable_groups(model: nn.Module, groups: list[list[str]]) -> list[bool]:
    """For each group: are all its parameters trainable? (checked to be all-or-none)"""
    flags = dict(model.named_parameters())
    states = []
    for names in groups:
        values = {flags[name].requires_grad for name in names}
        assert len(values) == 1, "a group is partly frozen"
        states.append(values.pop())
    return states


@pytest.mark.parametrize("arch", ARCHS)
def test_groups_run_from_stem_to_head(arch):
    model = make(arch)
    groups = parameter_groups(model)
    assert len(groups) >= 4
    head = model.get_classifier()
    assert {id(p) for p in head.parameters()} <= {
        id(dict(model.named_parameters())[name]) for name in groups[-1]
    }
    assert sum(map(len, groups)) == len(list(model.parameters()))


@pytest.mark.parametrize("arch", ARCHS)
def test_none_and_freeze_backbone_and_partial(arch):
    model = make(arch)
    groups = parameter_groups(model)
    n = len(groups)
    Freezer(model, FreezingParams(strategy="none"), "k").apply(0)
    assert trainable_groups(model, groups) == [True] * n
    Freezer(model, FreezingParams(strategy="freeze_backbone"), "k").apply(0)
    assert trainable_groups(model, groups) == [False] * (n - 1) + [True]
    Freezer(model, FreezingParams(strategy="partial", groups=2), "k").apply(0)
    assert trainable_groups(model, groups) == [False, False] + [True] * (n - 2)


@pytest.mark.parametrize("arch", ARCHS)
def test_progressive_unfreezes_from_the_head_down(arch):
    model = make(arch)
    groups = parameter_groups(model)
    freezer = Freezer(model, FreezingParams(strategy="progressive", schedule=[2, 4]), "k")
    seen = []
    for epoch in range(6):
        freezer.apply(epoch)
        seen.append(trainable_groups(model, groups))
    n = len(groups)
    assert seen[0] == seen[1] == [False] * (n - 1) + [True]
    frozen = seen[2].count(False)
    assert seen[2] == seen[3] == [False] * frozen + [True] * (n - frozen)
    assert 0 < frozen < n - 1  # the first step unfroze part of the backbone, not all of it
    assert seen[4] == seen[5] == [True] * n
    # never re-freezes: the trainable set only grows
    for before, after in itertools.pairwise(seen):
        assert all(a or not b for b, a in zip(before, after))


def test_partial_with_more_groups_than_the_model_has():
    model = make("test_resnet")
    with pytest.raises(ParamsError, match="'partial' freezes 6 groups but the model has only 6"):
        Freezer(model, FreezingParams(strategy="partial", groups=6), "models.resnet.freezing")


def test_progressive_with_more_steps_than_groups():
    model = make("test_resnet")  # 6 groups: 5 below the head
    with pytest.raises(ParamsError, match="6 unfreezing steps but the model has only 5"):
        Freezer(model, FreezingParams(strategy="progressive", schedule=[1, 2, 3, 4, 5, 6]), "k")


def test_layer_decay_scales_learning_rates_by_depth():
    model = make("test_vit")
    freezer = Freezer(model, FreezingParams(strategy="layer_decay", layer_decay=0.5), "k")
    scales = freezer.lr_scales()
    groups = parameter_groups(model)
    assert scales[groups[-1][0]] == 1.0
    assert scales[groups[-2][0]] == 0.5
    assert scales[groups[0][0]] == pytest.approx(0.5 ** (len(groups) - 1))
    train = shipped(
        train={"lr": 0.1, "weight_decay": 0.01, "scheduler": "constant", "warmup_epochs": 0.0}
    ).train
    optimizer = build_optimizer(model, train, 0.1, scales)
    build_scheduler(optimizer, train, 0.1, steps_per_epoch=10)  # timm applies lr_scale
    rates = sorted({round(group["lr"], 12) for group in optimizer.param_groups}, reverse=True)
    assert rates == [round(0.1 * 0.5**i, 12) for i in range(len(groups))]
    # biases and norms are not decayed
    for group in optimizer.param_groups:
        assert group["weight_decay"] == (0.01 if group["params"][0].ndim > 1 else 0.0)


def test_frozen_batchnorm_stays_in_eval_mode():
    model = make("test_resnet")
    Freezer(model, FreezingParams(strategy="freeze_backbone"), "k").apply(0)
    model.train()
    freeze_batchnorm_stats(model)
    stem_bn = model.bn1
    assert not stem_bn.training
    before = stem_bn.running_mean.clone()
    model(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert torch.equal(before, stem_bn.running_mean)


def test_optimizer_picks_up_unfrozen_parameters():
    model = make("test_resnet")
    freezer = Freezer(model, FreezingParams(strategy="progressive", schedule=[1]), "k")
    optimizer = build_optimizer(model, shipped().train, 0.1, {})
    stem = next(model.parameters())  # the first parameter of the stem
    for epoch in range(2):
        freezer.apply(epoch)
        before = stem.detach().clone()
        optimizer.zero_grad(set_to_none=True)
        model(torch.randn(4, 3, 32, 32)).sum().backward()
        optimizer.step()
        assert torch.equal(before, stem) == (epoch == 0)
