"""The optimizer and the learning-rate schedule of a training run: timm's, or for `muon` ours
(stages/common/training/muon.py), over the freezing strategies' parameter groups."""

from __future__ import annotations

from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from torch import nn

from stages.common.config.training import TrainParams
from stages.common.training.muon import MuonSGD, takes_muon


def build_optimizer(
    model: nn.Module, params: TrainParams, lr: float, lr_scales: dict[str, float]
) -> torch.optim.Optimizer:
    """timm's optimizer (or, for ``muon``, ours) over all parameters, frozen ones included (they
    get no gradient, so no update): when a group unfreezes, the optimizer picks it up with no
    rebuild. Biases and normalisation weights are decayed only with ``bias_decay``. Layer-wise
    decay is a per-group ``lr_scale``, which timm's schedulers apply; the groups are the
    freezing strategies' own (coarse) groups, so `layer_decay` and `partial`/`progressive`
    speak of the same stem ... head. Muon's filters run at ``train.muon_lr`` x those scales."""
    muon = params.optimizer == "muon"
    grouped: dict[tuple[float, bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        decay = parameter.ndim > 1 or params.bias_decay
        key = (lr_scales.get(name, 1.0), decay, muon and takes_muon(parameter))
        grouped.setdefault(key, []).append(parameter)
    param_groups = []
    for (scale, decay, filters), members in sorted(grouped.items(), key=lambda item: -item[0][0]):
        group: dict[str, Any] = {
            "params": members,
            "lr_scale": scale,
            "weight_decay": params.weight_decay if decay else 0.0,
        }
        if filters:  # pinned norm instead of weight decay (see stages/common/training/muon.py)
            group.update(
                muon=True,
                lr_scale=scale * params.muon_lr / params.lr,
                momentum=params.muon_momentum,
                weight_decay=0.0,
            )
        param_groups.append(group)
    if muon:
        return MuonSGD(param_groups, lr=lr, momentum=params.momentum)
    return create_optimizer_v2(
        param_groups,
        opt="sgd" if params.optimizer == "sgd" else "adamw",  # timm's "sgd" is Nesterov
        lr=lr,
        weight_decay=params.weight_decay,
        momentum=params.momentum,
    )


def warmup_epochs(params: TrainParams) -> float:
    """The warm-up the schedule uses: ``train.warmup_epochs``, at most half the run, so that a
    short run of the defaults (`bash run.sh 1`: one warm-up epoch of one) still decays."""
    return min(params.warmup_epochs, params.epochs / 2)


def build_scheduler(
    optimizer: torch.optim.Optimizer, params: TrainParams, lr: float, steps_per_epoch: int
) -> Scheduler:
    """timm's per-step schedule: linear warm-up to ``lr``, then cosine, poly (linear), step or
    constant over the remaining steps, so that the whole run is ``train.epochs`` long.

    The warm-up is a prefix (timm's ``warmup_prefix``): without it timm lays the decay over
    the whole run and the warm-up hands over to an lr already decayed (a drop from 0.75 to
    0.59 at the end of the CPU preset's warm-up). Step decays count from the warm-up's end."""
    total_steps = params.epochs * steps_per_epoch
    # at least one step after the warm-up: timm's decaying schedules need a length > 0
    warmup_steps = min(round(warmup_epochs(params) * steps_per_epoch), total_steps - 1)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=params.scheduler,
        num_epochs=total_steps - warmup_steps,
        decay_epochs=params.step_epochs * steps_per_epoch,
        decay_rate=1.0 if params.scheduler == "poly" else params.gamma,
        min_lr=lr * params.min_lr_ratio,
        warmup_lr=lr * params.warmup_lr_ratio,
        warmup_epochs=warmup_steps,
        warmup_prefix=True,
        step_on_epochs=False,
        updates_per_epoch=1,  # every length above is in steps already
    )
    return scheduler
