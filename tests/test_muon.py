"""train.optimizer: muon — which parameters take Muon, what one step does, how it schedules —
and the other optimizer settings of the airbench recipe (bias decay, the biases' rate)."""

from __future__ import annotations

import json

import timm
import torch

import stages.common.models.cifar_nets  # noqa: F401  (registers airbench)
from stages.common.training.muon import MuonSGD
from stages.common.training.optim import build_optimizer, build_scheduler
from tests.conftest import run_module, shipped, update_params

MUON = {"optimizer": "muon", "lr": 0.5, "muon_lr": 0.2, "muon_momentum": 0.6, "momentum": 0.85}


def muon_groups(optimizer: torch.optim.Optimizer) -> tuple[list[dict], list[dict]]:
    groups = optimizer.param_groups
    return [g for g in groups if g["muon"]], [g for g in groups if not g["muon"]]


def test_conv_filters_take_muon_and_everything_else_nesterov_sgd():
    model = timm.create_model("test_efficientnet", num_classes=10)  # has depthwise filters
    optimizer = build_optimizer(model, shipped(train=MUON).train, 0.5, {})
    assert isinstance(optimizer, MuonSGD)
    muon, others = muon_groups(optimizer)
    filters = {id(p) for g in muon for p in g["params"]}
    for parameter in model.parameters():
        takes_muon = parameter.ndim == 4 and parameter.shape[1] > 1
        assert (id(parameter) in filters) == takes_muon
    assert any(p.ndim == 4 and p.shape[1] == 1 for g in others for p in g["params"])
    assert all(g["momentum"] == 0.6 and g["weight_decay"] == 0.0 for g in muon)
    assert {g["momentum"] for g in others} == {0.85}


def test_the_scheduler_moves_muon_and_sgd_rates_together():
    params = shipped(train={**MUON, "scheduler": "poly", "warmup_epochs": 0, "min_lr_ratio": 0})
    model = timm.create_model("airbench_small", num_classes=10)
    optimizer = build_optimizer(model, params.train, 0.5, {})
    scheduler = build_scheduler(optimizer, params.train, 0.5, steps_per_epoch=10)
    muon, others = muon_groups(optimizer)
    assert muon[0]["lr"] == 0.2 and others[0]["lr"] == 0.5
    scheduler.step_update(5)  # 5 of the run's train.epochs x 10 steps
    ratio = muon[0]["lr"] / 0.2
    assert 0 < ratio < 1 and others[0]["lr"] / 0.5 == ratio


def test_a_muon_step_pins_the_filter_norm_and_orthogonalises_the_update():
    torch.manual_seed(0)
    filters = torch.nn.Parameter(3 * torch.randn(16, 8, 3, 3))
    optimizer = MuonSGD([{"params": [filters], "muon": True, "momentum": 0.0}], lr=0.1, momentum=0)
    # an ill-conditioned gradient: singular values from 0.1 to 10
    left, _ = torch.linalg.qr(torch.randn(16, 16))
    right, _ = torch.linalg.qr(torch.randn(72, 16))
    gradient = left @ torch.diag(torch.logspace(-1, 1, 16)) @ right.T
    filters.grad = gradient.view(16, 8, 3, 3).clone()
    pinned = filters.detach() * 16**0.5 / filters.detach().norm()
    optimizer.step()
    update = (pinned - filters.detach()).reshape(16, -1) / 0.1
    singular = torch.linalg.svdvals(update)
    # Newton-Schulz flattens the spectrum (a condition number of 100): large directions no
    # longer dwarf small ones
    assert singular.max() < 1.5 and singular.min() > 0.2 * singular.max()
    # the update points along the gradient
    assert torch.sum(update * gradient) > 0


def test_sgd_groups_step_exactly_as_torch_nesterov_sgd():
    torch.manual_seed(0)
    ours, theirs = torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(5, 3))
    with torch.no_grad():
        theirs.copy_(ours)
    optimizer = MuonSGD([{"params": [ours], "weight_decay": 0.01}], lr=0.1, momentum=0.85)
    reference = torch.optim.SGD([theirs], lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.01)
    for _ in range(4):
        gradient = torch.randn(5, 3)
        ours.grad, theirs.grad = gradient.clone(), gradient.clone()
        optimizer.step()
        reference.step()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    restored = MuonSGD([{"params": [ours], "weight_decay": 0.01}], lr=0.1, momentum=0.85)
    restored.load_state_dict(optimizer.state_dict())  # what resume does
    torch.testing.assert_close(
        restored.state[ours]["momentum_buffer"], reference.state[theirs]["momentum_buffer"]
    )


def test_a_model_trains_with_muon_through_the_train_stage(ready_project):
    update_params(ready_project, train={**MUON, "epochs": 4, "lr": 0.05, "muon_lr": 0.05})
    result = run_module(ready_project, "stages.train", "resnet")
    assert result.returncode == 0, result.stderr
    summary = json.loads((ready_project / "dvclive/resnet/metrics.json").read_text())
    assert summary["best_val_accuracy"] > 0.3  # chance is 0.1


def test_bias_decay_decays_biases_and_norm_weights_too():
    model = timm.create_model("test_resnet", num_classes=10)
    for bias_decay in (False, True):
        optimizer = build_optimizer(model, shipped(train={"bias_decay": bias_decay}).train, 0.1, {})
        decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] for p in g["params"]}
        one_dimensional = [p for p in model.parameters() if p.ndim == 1]
        assert all((id(p) in decayed) == bias_decay for p in one_dimensional)
        assert all(id(p) in decayed for p in model.parameters() if p.ndim > 1)


def test_airbench_biases_learn_bias_lr_scale_times_faster():
    """The whitening and BatchNorm biases are 8 x their parameter, so one SGD step moves them
    64 x as far as an unscaled bias with the same gradient would move (0.01 -> 0.64)."""
    model = timm.create_model("airbench_small", num_classes=10)
    for module in (model.whiten, model.blocks[0].norm1):
        before = module.value(torch.float32).detach().clone()
        module.value(torch.float32).sum().backward()  # a gradient of 1 for each bias value
        torch.optim.SGD([module.bias], lr=0.01).step()
        torch.testing.assert_close(
            before - module.value(torch.float32), torch.full_like(before, 0.64)
        )
