"""timm models: creation from params, pretrained weights from the hub or a local file."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from stages.common.errors import ParamsError
from stages.common.params import ModelParams

# Channel statistics of CIFAR-10 (0..1 scale) for models trained from scratch at 32 px.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
NATIVE_SIZE = 32


@dataclass(frozen=True)
class Preprocessing:
    """What turns a uint8 32 px image into model input; saved with every checkpoint."""

    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def as_dict(self) -> dict:
        return asdict(self)


def check_arch(arch: str, key: str) -> None:
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('.')[0][:6]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ParamsError(f"{key}: unknown timm architecture '{arch}'{hint}")


def check_model_spec(name: str, spec: ModelParams) -> None:
    """What can be checked without building the model: the architecture and the weights file."""
    check_arch(spec.arch, f"models.{name}.arch")
    if isinstance(spec.pretrained, str) and not Path(spec.pretrained).is_file():
        raise ParamsError(f"models.{name}.pretrained: weights file '{spec.pretrained}' not found")


def _create(arch: str, num_classes: int, img_size: int | None, **kwargs) -> nn.Module:
    """Create ``arch``; models with a fixed input grid (ViT) are built for ``img_size``."""
    if img_size is not None:
        try:
            return timm.create_model(arch, num_classes=num_classes, img_size=img_size, **kwargs)
        except TypeError:  # convolutional models take any input size
            pass
    return timm.create_model(arch, num_classes=num_classes, **kwargs)


def build_model(name: str, spec: ModelParams, num_classes: int) -> tuple[nn.Module, Preprocessing]:
    """The model of ``models.<name>`` and the preprocessing its weights expect."""
    key = f"models.{name}"
    check_model_spec(name, spec)
    pretrained = spec.pretrained
    kwargs: dict = {}
    if isinstance(pretrained, str):
        kwargs["pretrained_cfg_overlay"] = {"file": pretrained}
    img_size = spec.img_size if spec.img_size else (None if pretrained else NATIVE_SIZE)
    try:
        model = _create(spec.arch, num_classes, img_size, pretrained=bool(pretrained), **kwargs)
    except Exception as error:  # unpicklers and hub clients raise many types
        if isinstance(pretrained, str):
            raise ParamsError(_describe_load_error(key, spec, num_classes, error)) from None
        if pretrained:
            raise ParamsError(
                f"{key}.pretrained: could not fetch timm's weights for '{spec.arch}' ({error}); "
                "offline, set it to a local .pth/.safetensors file"
            ) from None
        raise
    return model, resolve_preprocessing(model, bool(pretrained), img_size)


def resolve_preprocessing(
    model: nn.Module, pretrained: bool, img_size: int | None
) -> Preprocessing:
    config = timm.data.resolve_model_data_config(model)
    if not pretrained:
        return Preprocessing(img_size or config["input_size"][-1], CIFAR_MEAN, CIFAR_STD)
    return Preprocessing(
        img_size or config["input_size"][-1],
        tuple(config["mean"]),
        tuple(config["std"]),
        "bicubic" if config.get("interpolation") == "bicubic" else "bilinear",
    )


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    weights = torch.load(path, map_location="cpu", weights_only=True)
    return weights.get("state_dict", weights) if isinstance(weights, dict) else {}


def _describe_load_error(key: str, spec: ModelParams, num_classes: int, error: Exception) -> str:
    """One line saying which weight names are missing, unexpected or of another shape."""
    path = Path(str(spec.pretrained))
    try:
        found = _read_weights(path)
    except Exception as read_error:
        return f"{key}.pretrained: '{path}' is not a readable weights file ({read_error})"[:300]
    expected = _create(spec.arch, num_classes, spec.img_size, pretrained=False).state_dict()
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    resized = [
        name
        for name in expected
        if name in found and tuple(found[name].shape) != tuple(expected[name].shape)
    ]
    details = [
        f"{len(names)} {label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
        for label, names in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("tensors of another shape", resized),
        )
        if names
    ]
    reason = "; ".join(details) or str(error).splitlines()[0][:200]
    return f"{key}.pretrained: '{path}' does not hold weights of '{spec.arch}' ({reason})"


def rebuild_model(checkpoint: dict) -> nn.Module:
    """The architecture of a saved checkpoint with its weights loaded (no download)."""
    model = _create(
        checkpoint["arch"],
        len(checkpoint["classes"]),
        checkpoint["preprocessing"]["img_size"],
        pretrained=False,
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def to_channels_last(model: nn.Module, setting: str | bool, device: torch.device) -> bool:
    enabled = device.type == "cuda" if setting == "auto" else bool(setting)
    if enabled:
        model.to(memory_format=torch.channels_last)
    return enabled
