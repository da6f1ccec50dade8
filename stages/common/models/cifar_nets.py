"""CIFAR-native networks trained from scratch, registered in timm's model registry.

``airbench`` follows Keller Jordan's airbench94 (https://github.com/KellerJordan/cifar10-airbench):
a fixed 2x2 patch-whitening convolution, three conv groups (conv, max-pool, BatchNorm, GELU,
conv, BatchNorm, GELU), max-pool, and a linear head whose logits are scaled by 1/9. Differences
from the original, so that it trains through this project's ordinary engine: the whitening
filters come from the first training batch the model sees (not a separate pass over the
data); BatchNorm scales are fixed at 1, and the BatchNorm and whitening biases learn
``bias_lr_scale`` times faster by reparametrisation (airbench94_muon gives them that rate in a
separate optimizer group); the whitening bias trains throughout (airbench stops it after 3
epochs).

Registered names (``models.<name>.arch``): ``airbench`` (widths 64/256/256, airbench94's) and
``airbench_small`` (64/128/128, about half the compute, for CPUs).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import nn

from stages.common.data.cifar10 import MEAN, STD

WHITEN_KERNEL = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL**2  # each whitening filter and its negation
WHITEN_EPS = 5e-4
LOGIT_SCALE = 1 / 9


def _config(**overrides: Any) -> dict[str, Any]:
    return {
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": MEAN,
        "std": STD,
        "first_conv": "whiten",
        "classifier": "head",
        **overrides,
    }


class ScaledBias(nn.Module):
    """A per-channel bias that is ``scale * parameter``, so plain SGD gives it an effective
    learning rate ``bias_lr_scale`` (``scale**2``) times the other parameters'."""

    def __init__(self, channels: int, bias_lr_scale: float) -> None:
        super().__init__()
        self.scale = bias_lr_scale**0.5
        self.bias = nn.Parameter(torch.zeros(channels))

    def value(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.scale * self.bias).to(dtype)


class BiasNorm(ScaledBias):
    """BatchNorm without a learned scale, with a :class:`ScaledBias`."""

    def __init__(self, channels: int, bias_lr_scale: float, momentum: float = 0.4) -> None:
        super().__init__(channels, bias_lr_scale)
        self.norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=momentum, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) + self.value(x.dtype).view(1, -1, 1, 1)


def _conv(channels_in: int, channels_out: int) -> nn.Conv2d:
    """3x3 'same' convolution, identity-initialised on its first ``channels_in`` filters."""
    conv = nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:channels_in])
    return conv


class ConvGroup(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, bias_lr_scale: float) -> None:
        super().__init__()
        self.conv1 = _conv(channels_in, channels_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BiasNorm(channels_out, bias_lr_scale)
        self.conv2 = _conv(channels_out, channels_out)
        self.norm2 = BiasNorm(channels_out, bias_lr_scale)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class Whitening(ScaledBias):
    """A fixed 2x2 convolution that decorrelates pixel patches (ZCA-like, from the
    eigenvectors of the patch covariance), with a :class:`ScaledBias`; its filters are set from
    the first training batch.

    Whether they are set is a buffer (checkpoints and resume states carry it) mirrored by a
    Python flag: reading the buffer on a GPU would make the host wait for every step queued
    before, at the start of each training step."""

    def __init__(self, bias_lr_scale: float) -> None:
        super().__init__(WHITEN_WIDTH, bias_lr_scale)
        shape = (WHITEN_WIDTH, 3, WHITEN_KERNEL, WHITEN_KERNEL)
        self.register_buffer("weight", torch.zeros(shape))
        self.register_buffer("initialised", torch.tensor(False))
        self._fitted = False

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._fitted = bool(self.initialised)  # read once, when loaded

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        with torch.autocast(images.device.type, enabled=False):  # float64 statistics
            patches = F.unfold(images.double(), WHITEN_KERNEL).transpose(1, 2).reshape(-1, 12)
            covariance = patches.T @ patches / len(patches)
            values, vectors = torch.linalg.eigh(covariance)
        filters = (vectors.T / torch.sqrt(values + WHITEN_EPS)[:, None]).flip(0).float()
        filters = filters.reshape(-1, 3, WHITEN_KERNEL, WHITEN_KERNEL)
        self.weight.copy_(torch.cat([filters, -filters]))
        self.initialised.fill_(True)
        self._fitted = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._fitted:
            self.fit(x)
        return F.conv2d(x, self.weight.to(x.dtype), self.value(x.dtype))


class Airbench(nn.Module):
    """airbench94's network (see the module docstring), with timm's model interface."""

    def __init__(
        self,
        widths: tuple[int, int, int] = (64, 256, 256),
        num_classes: int = 10,
        in_chans: int = 3,
        bias_lr_scale: float = 64.0,
        **_: Any,
    ) -> None:
        super().__init__()
        if in_chans != 3:
            raise ValueError("airbench takes RGB input (in_chans=3)")
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = widths[-1]
        self.whiten = Whitening(bias_lr_scale)
        self.act = nn.GELU()
        channels = (WHITEN_WIDTH, *widths)
        self.blocks = nn.Sequential(
            *(ConvGroup(channels[i], channels[i + 1], bias_lr_scale) for i in range(3))
        )
        self.pool = nn.MaxPool2d(3)
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.pretrained_cfg = self.default_cfg = _config(num_classes=num_classes)

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {"stem": r"^whiten", "blocks": r"^blocks\.(\d+)"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes, bias=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.act(self.whiten(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.head(x) * LOGIT_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create(widths: tuple[int, int, int], pretrained: bool, **kwargs: Any) -> Airbench:
    if pretrained:
        raise ValueError("airbench has no pretrained weights: it trains from scratch")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return Airbench(widths, **kwargs)


@register_model
def airbench(pretrained: bool = False, **kwargs: Any) -> Airbench:
    """airbench94's widths: 64/256/256 channels, 2.0M parameters."""
    return _create((64, 256, 256), pretrained, **kwargs)


@register_model
def airbench_small(pretrained: bool = False, **kwargs: Any) -> Airbench:
    """Widths 64/128/128, 0.6M parameters: about half airbench94's compute."""
    return _create((64, 128, 128), pretrained, **kwargs)
