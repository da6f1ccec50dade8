"""Early stopping by validation loss, which also picks the model: the best epoch's weights."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class EarlyStopping:
    """The best epoch so far by validation loss, its weights, and how many epochs since it:
    what picks the model and stops a run whose validation loss no longer improves. The resume
    state stores it whole."""

    patience: int | None
    best_loss: float = math.inf
    best_epoch: int = -1  # counted from 0
    best_weights: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0

    def update(self, epoch: int, val_loss: float, model: nn.Module) -> bool:
        """Record ``epoch``'s validation loss; True when it is the best so far (its weights
        are kept, on the CPU)."""
        if val_loss < self.best_loss:
            weights = model.state_dict()
            self.best_loss, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
            self.best_weights = {k: v.detach().cpu().clone() for k, v in weights.items()}
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_loss, self.best_epoch = state["best_loss"], state["best_epoch"]
        self.best_weights, self.bad_epochs = state["best_weights"], state["bad_epochs"]
