"""The schema of the training sections: train (with its augment) and each model's own keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt, ValidationError, model_validator

from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.param_types import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Section,
    Share,
)
from stages.common.plumbing.params_errors import known_keys


class AugmentParams(Section):
    strategy: Literal["none", "standard", "aggressive", "randaugment", "trivialaugment"]
    crop_padding: Annotated[StrictInt, Field(ge=0, le=16)]
    flip: Literal["random", "alternate"]
    randaugment_magnitude: Annotated[StrictInt, Field(ge=0, le=30)]
    randaugment_ops: PositiveInt
    cutmix: NonNegativeFloat
    mixup: NonNegativeFloat
    mix_prob: Share


class TrainParams(Section):
    epochs: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    bias_decay: bool
    optimizer: Literal["adamw", "sgd", "muon"]
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)]
    muon_lr: PositiveFloat
    muon_momentum: Annotated[float, Field(ge=0.0, lt=1.0)]
    scheduler: Literal["cosine", "poly", "step", "constant"]
    warmup_epochs: NonNegativeFloat
    warmup_lr_ratio: Share
    min_lr_ratio: Share
    step_epochs: PositiveInt
    gamma: Fraction
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)]
    grad_clip: PositiveFloat | None
    ema_decay: Fraction | None
    patience: PositiveInt | None
    channels_last: Literal["auto", True, False]
    amp: Literal["auto", True, False]
    compile: bool
    workers: Literal["auto"] | NonNegativeInt
    augment: AugmentParams


class FreezingParams(Section):
    strategy: Literal["none", "freeze_backbone", "partial", "progressive", "layer_decay"] = "none"
    groups: NonNegativeInt = 0
    schedule: list[StrictInt] = Field(default_factory=list)
    layer_decay: Fraction = 0.75

    @model_validator(mode="after")
    def _check_strategy_settings(self) -> FreezingParams:
        if self.strategy == "partial" and self.groups < 1:
            raise ValueError("groups: 'partial' needs groups >= 1 (how many groups to freeze)")
        if self.strategy == "progressive":
            if not self.schedule:
                raise ValueError(
                    "schedule: 'progressive' needs epochs to unfreeze at, e.g. [5, 10]"
                )
            if any(epoch < 1 for epoch in self.schedule):
                raise ValueError(f"schedule: epochs must be >= 1, got {self.schedule}")
            if self.schedule != sorted(set(self.schedule)):
                raise ValueError(f"schedule: must be strictly increasing, got {self.schedule}")
        return self


class ModelParams(Section):
    """One model's own settings; everything in ``train`` is shared by all models."""

    arch: Annotated[str, Field(min_length=1)]
    pretrained: bool | str
    # 1,024 px: four times the largest input timm's ImageNet models are made for; beyond it a
    # CIFAR image is upsampled to no purpose and a batch no longer fits any memory
    img_size: Annotated[StrictInt, Field(ge=1, le=1024)] | None = None
    lr_scale: PositiveFloat = 1.0
    freezing: FreezingParams = FreezingParams()


def learning_rate(train: TrainParams, model: ModelParams) -> float:
    """The learning rate a model trains at: train.lr x its lr_scale."""
    return train.lr * model.lr_scale


def check_training(train: TrainParams, models: Mapping[str, ModelParams]) -> None:
    """What the training sections must agree on; ParamsError with one line otherwise."""
    for name, model in models.items():
        schedule = model.freezing.schedule
        if schedule and schedule[-1] >= train.epochs:
            raise ParamsError(
                f"models.{name}.freezing.schedule: epoch {schedule[-1]} is past "
                f"the last epoch (train.epochs={train.epochs}, epochs count from 0)"
            )
    augment = train.augment
    if (augment.cutmix > 0 or augment.mixup > 0) and train.batch_size % 2:
        raise ParamsError(
            f"train.batch_size: CutMix/MixUp pair images within a batch and need an even "
            f"batch size, got {train.batch_size}"
        )


def misplaced_training_key(error: ValidationError, root: type[BaseModel]) -> str | None:
    """One line for a shared training key put under a model (models.<name>.<train key>):
    where it belongs; None for any other problem."""
    first = error.errors()[0]
    location = first["loc"]
    if first["type"] != "extra_forbidden" or len(location) != 3 or location[0] != "models":
        return None
    if location[2] not in TrainParams.model_fields:
        return None
    known = known_keys(root, location[:-1])
    return (
        f"{'.'.join(map(str, location))}: unknown key: every model shares "
        f"train.{location[2]} (per-model keys: {', '.join(known)}; "
        "models.<name>.lr_scale scales the learning rate)"
    )
