"""timm models: creation from params, pretrained weights from the hub or a local file.

Every model gets a new classification head for the ten classes, initialised at zero (as BiT
does): over pretrained features a head drawn by the architecture's own scheme starts with
huge logits that a head-only phase (freeze_backbone, the start of progressive unfreezing)
needs many steps to undo; a zero head starts at the uniform prediction and learns from the
first step. A local weights file must load completely, the replaced head excepted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import timm
import torch
from torch import nn

from stages.common.data.cifar10 import MEAN, STD
from stages.common.models import cifar_nets  # noqa: F401  (registers the CIFAR-native networks)
from stages.common.models.checkpoint import Preprocessing
from stages.common.plumbing.errors import ParamsError, first_line

if TYPE_CHECKING:  # evaluate and export rebuild models from checkpoints, not from params
    from stages.common.config.training import ModelParams

NATIVE_SIZE = 32


def check_arch(arch: str, key: str) -> None:
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('.')[0][:6]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ParamsError(f"{key}: unknown timm architecture '{arch}'{hint}")


def create_architecture(arch: str, num_classes: int, img_size: int | None, **kwargs) -> nn.Module:
    """``arch`` with ``num_classes`` outputs; models with a fixed input grid (ViT) are built for
    ``img_size``, convolutional ones take any size."""
    if img_size is not None:
        try:
            return timm.create_model(arch, num_classes=num_classes, img_size=img_size, **kwargs)
        except TypeError:  # convolutional models take no img_size
            pass
    return timm.create_model(arch, num_classes=num_classes, **kwargs)


def input_size(spec: ModelParams) -> int | None:
    """The training resolution: img_size if set, else native 32 px without pretrained weights,
    else (None) the pretrained config's."""
    if spec.img_size:
        return spec.img_size
    return None if spec.pretrained else NATIVE_SIZE


def build_model(name: str, spec: ModelParams, num_classes: int) -> tuple[nn.Module, Preprocessing]:
    """The model of ``models.<name>`` with its zero-initialised head, and the preprocessing its
    weights expect. ParamsError (one line) for an unknown architecture or unusable weights."""
    key = f"models.{name}"
    check_arch(spec.arch, f"{key}.arch")
    pretrained = spec.pretrained
    img_size = input_size(spec)
    if isinstance(pretrained, str):
        model = _from_weights_file(key, spec, num_classes, img_size)
    elif pretrained:
        try:
            model = create_architecture(spec.arch, num_classes, img_size, pretrained=True)
        except Exception as error:  # hub clients raise many types
            raise ParamsError(
                f"{key}.pretrained: could not fetch timm's weights for '{spec.arch}' "
                f"({first_line(error)}); offline, set it to a local .safetensors/.pth file, "
                "or fill timm's cache where the internet is and set HF_HUB_OFFLINE=1 "
                "(README: pretrained weights offline)"
            ) from None
    else:
        try:
            model = create_architecture(spec.arch, num_classes, img_size, pretrained=False)
        except (ValueError, TypeError, RuntimeError) as error:
            raise ParamsError(f"{key}.arch: cannot build '{spec.arch}' ({error})") from None
    zero_head(model)
    return model, resolve_preprocessing(model, bool(pretrained), img_size)


def zero_head(model: nn.Module) -> None:
    """Start the classification head at zero: uniform predictions, gradients from step one."""
    head = model.get_classifier()
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.zero_()


def check_weights_file(name: str, spec: ModelParams, num_classes: int) -> None:
    """Load ``models.<name>.pretrained`` the way training will, so that a wrong file stops
    before DVC runs anything (stages.check_params)."""
    if isinstance(spec.pretrained, str):
        _from_weights_file(f"models.{name}", spec, num_classes, input_size(spec))


def _from_weights_file(
    key: str, spec: ModelParams, num_classes: int, img_size: int | None
) -> nn.Module:
    path = Path(str(spec.pretrained))
    if not path.is_file():
        raise ParamsError(f"{key}.pretrained: weights file '{path}' not found")
    with _timm_load_report() as report:
        try:
            model = create_architecture(
                spec.arch,
                num_classes,
                img_size,
                pretrained=True,
                pretrained_cfg_overlay={"file": str(path)},
            )
        except Exception as error:  # loaders raise many types for a foreign file
            raise ParamsError(_load_error(key, spec.arch, path, error)) from None
    if not any(record.getMessage().startswith(TIMM_LOADING) for record in report):
        raise ParamsError(f"{key}.pretrained: timm loaded nothing from '{path}'")
    head = _head_names(model)
    reported = _reported_keys(report)
    missing = [k for k in reported["Missing"] if k not in head]
    unexpected = [k for k in reported["Unexpected"] if k not in head]
    if missing or unexpected:
        details = [
            f"{len(names)} {label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for label, names in (("missing keys", missing), ("unexpected keys", unexpected))
            if names
        ]
        raise ParamsError(
            f"{key}.pretrained: '{path}' does not hold weights of '{spec.arch}' "
            f"({'; '.join(details)})"
        )
    return model


# timm's load_pretrained returns nothing: it reports what it loaded in its log, and a model
# whose head it replaces is loaded non-strictly, so missing or unexpected keys are only said
# there (timm 1.0's wording; tests/test_training.py fails if it changes). Its helpers log
# "Loaded  from checkpoint" for a local file too: every line of timm.models is kept here.
TIMM_MODELS_LOG = "timm.models"
TIMM_LOADING = "Loading pretrained weights from"
_KEYS_REPORT = re.compile(r"(Missing|Unexpected) keys \((.*)\) (discovered|found) while loading")


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _timm_load_report() -> Iterator[list[logging.LogRecord]]:
    """What timm logs while it builds a model: kept here, not printed (the caller names any
    problem in one line)."""
    builder_log = logging.getLogger(TIMM_MODELS_LOG)
    records: list[logging.LogRecord] = []
    handler = _Collect(records)
    level, propagate = builder_log.level, builder_log.propagate
    builder_log.addHandler(handler)
    builder_log.setLevel(logging.INFO)
    builder_log.propagate = False
    try:
        yield records
    finally:
        builder_log.removeHandler(handler)
        builder_log.setLevel(level)
        builder_log.propagate = propagate


def _reported_keys(records: list[logging.LogRecord]) -> dict[str, list[str]]:
    """{"Missing": [...], "Unexpected": [...]} as timm's log reported them."""
    keys: dict[str, list[str]] = {"Missing": [], "Unexpected": []}
    for record in records:
        match = _KEYS_REPORT.match(record.getMessage())
        if match:
            keys[match.group(1)] = match.group(2).split(", ")
    return keys


def _head_names(model: nn.Module) -> set[str]:
    """State-dict names of the classification head (replaced, so not expected in the file)."""
    head = model.get_classifier()
    prefix = next((name for name, module in model.named_modules() if module is head), None)
    return {f"{prefix}.{name}" for name in head.state_dict()} if prefix else set()


def _load_error(key: str, arch: str, path: Path, error: Exception) -> str:
    # torch refuses pickled objects ("weights_only ... blocked"); through timm the error
    # arrives as a RuntimeError, so the message, not the type, tells
    if "weights only" in str(error).lower().replace("_", " "):
        return (
            f"{key}.pretrained: '{path}' is not a weights file: it holds pickled Python "
            "objects, not only tensors (save a state_dict, or use .safetensors)"
        )
    message = first_line(error, prefer="size mismatch")
    if "size mismatch" in str(error):
        return f"{key}.pretrained: '{path}' does not hold weights of '{arch}' ({message})"
    return f"{key}.pretrained: '{path}' is not a readable weights file ({message})"


def resolve_preprocessing(
    model: nn.Module, pretrained: bool, img_size: int | None
) -> Preprocessing:
    config = timm.data.resolve_model_data_config(model)
    size = img_size or config["input_size"][-1]
    if not pretrained:
        return Preprocessing(img_size=size, mean=MEAN, std=STD)
    return Preprocessing(
        img_size=size,
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        interpolation="bicubic" if config.get("interpolation") == "bicubic" else "bilinear",
    )


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
