"""The optimisation step and what it owns: the optimizer, the learning-rate schedule and the
weights' moving average (EMA). The trainer runs epochs and decides when to stop; this module
decides how one batch changes the weights."""

from __future__ import annotations

import logging
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import nn

from stages.common.config.training import TrainParams
from stages.common.plumbing.machine import autocast
from stages.common.training.distillation import TrainingLoss
from stages.common.training.optim import build_optimizer, build_scheduler, warmup_epochs

log = logging.getLogger(__name__)


class Optimisation:
    """One run's optimizer, schedule and EMA, and the step that uses them."""

    def __init__(
        self,
        model: nn.Module,
        params: TrainParams,
        lr: float,
        lr_scales: dict[str, float],
        steps_per_epoch: int,
        amp: bool,
        loss: TrainingLoss | None = None,
    ) -> None:
        self.model = model
        self.params = params
        self.amp = amp
        self.loss = loss or TrainingLoss(params.label_smoothing)
        self.optimizer = build_optimizer(model, params, lr, lr_scales)
        self.scheduler = build_scheduler(self.optimizer, params, lr, steps_per_epoch)
        # use_warmup: the decay ramps up over the first steps, so a short run's EMA does not
        # stay anchored to the random initial weights
        self.ema = (
            ModelEmaV3(model, decay=params.ema_decay, use_warmup=True) if params.ema_decay else None
        )

    def capped_warmup(self) -> float | None:
        """The warm-up in epochs when train.warmup_epochs was capped (at half the run)."""
        epochs = warmup_epochs(self.params)
        return epochs if epochs < self.params.warmup_epochs else None

    def current_lr(self) -> float:
        return max(group["lr"] for group in self.optimizer.param_groups)

    def step(
        self,
        forward_model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        step: int,
        teacher_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward ``inputs`` (through ``forward_model``: the model, DDP-wrapped or compiled),
        the loss against ``targets`` (hard labels or a mix's soft ones, label smoothing on top;
        a student's teacher's logits too), backward, clipping, the optimizer's step, the
        schedule's, the EMA's. ``step`` counts from the start of the run. Returns (loss,
        logits), detached."""
        device = inputs.device
        with autocast(device, self.amp):
            logits = forward_model(inputs)
        loss = self.loss(logits.float(), targets, teacher_logits)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.params.grad_clip:
            nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], self.params.grad_clip
            )
        self.optimizer.step()
        self.scheduler.step_update(step + 1)
        if self.ema is not None:
            self.ema.update(self.model, step=step)
        return loss.detach(), logits.detach()

    def evaluation_model(self) -> nn.Module:
        """What validation scores: the EMA's weights when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
