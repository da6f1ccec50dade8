"""Freezing strategies, uniform across architectures through timm's parameter groups.

timm's ``group_matcher`` orders a model's parameters into groups from the stem to the head
(for a ResNet: stem, layer1..layer4, head). Every strategy is expressed on those groups.
"""

from __future__ import annotations

import numpy as np
from timm.models import group_parameters
from torch import nn

from stages.common.config.training import FreezingParams
from stages.common.plumbing.errors import ParamsError


def parameter_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names per group, stem first, head last."""
    grouped = group_parameters(model, model.group_matcher(coarse=True))
    return [grouped[key] for key in sorted(grouped)]


class Freezer:
    """Decides which groups train at which epoch and applies it to the model."""

    def __init__(self, model: nn.Module, params: FreezingParams, key: str) -> None:
        self.model = model
        self.params = params
        self.groups = parameter_groups(model)
        if params.strategy == "partial" and params.groups >= len(self.groups):
            raise ParamsError(
                f"{key}.groups: 'partial' freezes {params.groups} groups but the model has "
                f"only {len(self.groups)} (the last one, the head, must train)"
            )
        backbone = len(self.groups) - 1
        if params.strategy == "progressive" and len(params.schedule) > backbone:
            raise ParamsError(
                f"{key}.schedule: {len(params.schedule)} unfreezing steps but the model has "
                f"only {backbone} groups below the head"
            )

    def frozen_groups(self, epoch: int) -> int:
        """How many leading groups are frozen during ``epoch`` (counted from 0)."""
        strategy, backbone = self.params.strategy, len(self.groups) - 1
        if strategy == "freeze_backbone":
            return backbone
        if strategy == "partial":
            return self.params.groups
        if strategy == "progressive":
            # the backbone is split into len(schedule) chunks, unfrozen from the head down;
            # after the last scheduled epoch every group trains
            steps_done = sum(epoch >= start for start in self.params.schedule)
            edges = np.linspace(backbone, 0, len(self.params.schedule) + 1).round().astype(int)
            return int(edges[steps_done])
        return 0

    def apply(self, epoch: int) -> bool:
        """Set requires_grad for ``epoch``; True when it changed anything."""
        frozen = set()
        for names in self.groups[: self.frozen_groups(epoch)]:
            frozen.update(names)
        changed = False
        for name, parameter in self.model.named_parameters():
            trainable = name not in frozen
            changed |= parameter.requires_grad != trainable
            parameter.requires_grad_(trainable)
        return changed

    def lr_scales(self) -> dict[str, float]:
        """Layer-wise LR decay: the head trains at 1x, each group below at ``layer_decay`` x."""
        if self.params.strategy != "layer_decay":
            return {}
        last = len(self.groups) - 1
        return {
            name: self.params.layer_decay ** (last - index)
            for index, names in enumerate(self.groups)
            for name in names
        }


def freeze_batchnorm_stats(model: nn.Module) -> None:
    """Put normalisation layers whose parameters are all frozen in eval mode.

    Call after ``model.train()``: a frozen BatchNorm must not keep updating its running
    statistics from batches of another distribution.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parameters = list(module.parameters(recurse=False))
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()
