"""An epoch's running training loss, each step's loss read back from the device one step late.

Reading a step's loss as soon as it is queued (``loss.item()``) makes the host wait for the
device after every step: on a GPU, a synchronisation that leaves the device idle while the host
fetches and prepares the next batch and dispatches its kernels. Read one step late, the next
step is already queued when the host waits, so the device does not run dry; a diverging run is
still stopped within one step of it. On a CPU, where every operation finishes before the next
starts, nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepLoss:
    """One step's mean loss (a 0-d tensor, possibly still being computed) and its context."""

    loss: torch.Tensor
    images: int
    step: int  # counted from the start of the run
    lr: float  # the rate the step trained at


class LaggedLosses:
    """The losses of an epoch's steps, read one step late; ``check(value, step)`` sees each
    value as it is read (and may raise to stop the run)."""

    def __init__(self, check: Callable[[float, StepLoss], None]) -> None:
        self.check = check
        self.total = 0.0
        self.seen = 0
        self._pending: list[StepLoss] = []

    def add(self, step: StepLoss) -> bool:
        """Queue this step's loss and read the one before it: True when one was read (the
        running mean moved)."""
        self._pending.append(step)
        if len(self._pending) < 2:
            return False
        self._read(self._pending.pop(0))
        return True

    def finish(self) -> float:
        """The epoch's mean loss per image, every step read."""
        while self._pending:
            self._read(self._pending.pop(0))
        return self.mean

    @property
    def mean(self) -> float:
        return self.total / self.seen

    def _read(self, step: StepLoss) -> None:
        value = step.loss.item()
        self.check(value, step)
        self.total += value * step.images
        self.seen += step.images
