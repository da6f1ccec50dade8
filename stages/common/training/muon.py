"""airbench94_muon's optimizer: Muon for convolution filters, Nesterov SGD for the rest.

Muon (Keller Jordan, https://kellerjordan.github.io/posts/muon/) replaces a filter bank's
Nesterov-momentum update by its nearest semi-orthogonal matrix (timm's Newton-Schulz iteration),
so every direction of the update moves at the same rate. As in airbench94_muon, each filter bank
is first scaled back to norm sqrt(out_channels): a normalisation layer follows every such
convolution, so the scale changes nothing in the forward pass, and pinning it makes the learning
rate the relative size of every step for the whole run (no weight decay needed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from timm.optim.muon import zeropower_via_newtonschulz
from torch import nn
from torch.optim.sgd import sgd

NEWTON_SCHULZ_STEPS = 3  # airbench94_muon's; the iteration's coefficients are Muon's original
NEWTON_SCHULZ_COEFFICIENTS = [(3.4445, -4.7750, 2.0315)]


def takes_muon(parameter: nn.Parameter) -> bool:
    """A convolution filter bank with more than one input channel (not depthwise)."""
    return parameter.ndim == 4 and parameter.shape[1] > 1


class MuonSGD(torch.optim.Optimizer):
    """One optimizer, so that timm's schedulers and our checkpoints see one: parameter groups
    with ``muon: True`` take Muon steps with their own ``momentum``, every other group torch's
    Nesterov SGD with weight decay."""

    def __init__(self, param_groups: Iterable[dict[str, Any]], lr: float, momentum: float) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": 0.0, "muon": False}
        super().__init__(param_groups, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            if group["muon"]:
                for parameter in group["params"]:
                    if parameter.grad is not None:
                        self._muon_step(parameter, parameter.grad, group["lr"], group["momentum"])
                continue
            params = [p for p in group["params"] if p.grad is not None]
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            sgd(
                params,
                [p.grad for p in params],
                buffers,
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=0.0,
                nesterov=True,
                maximize=False,
            )
            for parameter, buffer in zip(params, buffers, strict=True):
                self.state[parameter]["momentum_buffer"] = buffer

    def _muon_step(
        self, parameter: torch.Tensor, grad: torch.Tensor, lr: float, momentum: float
    ) -> None:
        state = self.state[parameter]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grad)
        buffer = state["momentum_buffer"]
        buffer.mul_(momentum).add_(grad)
        direction = grad.add(buffer, alpha=momentum)  # Nesterov
        parameter.mul_(len(parameter) ** 0.5 / parameter.norm())
        # bf16 where matrix units make it fast (airbench's choice); CPUs without them: float32
        dtype = torch.bfloat16 if parameter.is_cuda else torch.float32
        update = zeropower_via_newtonschulz(
            direction.reshape(len(direction), -1),
            NEWTON_SCHULZ_STEPS,
            NEWTON_SCHULZ_COEFFICIENTS,
            dtype=dtype,
        )
        parameter.add_(update.view_as(parameter).to(parameter.dtype), alpha=-lr)
