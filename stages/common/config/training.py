"""The schema of the training sections: train (with its augment), each model's own keys, and
the students that models teach (distill)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo

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


class _Overrides(Section):
    """A partial section: written out (model_dump) with the keys given only."""

    @model_serializer(mode="wrap")
    def _given_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if key in self.model_fields_set}


def _overrides_of(
    section: type[Section], name: str, nested: dict[str, type[Section]] | None = None
) -> type[Section]:
    """``section`` with every key optional and checked as there: the keys given (its
    ``model_fields_set``) are what a model overrides; ``nested`` maps a key to its own
    overrides model (``augment``)."""
    nested = nested or {}
    fields: dict[str, Any] = {
        key: (nested[key] | None, None)
        if key in nested
        else (info.annotation, FieldInfo.merge_field_infos(info, default=None))
        for key, info in section.model_fields.items()
    }
    return create_model(name, __base__=_Overrides, __doc__=section.__doc__, **fields)


if TYPE_CHECKING:  # the same keys, each optional: what a type checker needs to know
    TrainOverrides = TrainParams
else:
    TrainOverrides = _overrides_of(
        TrainParams, "TrainOverrides", {"augment": _overrides_of(AugmentParams, "AugmentOverrides")}
    )


def overridden(train: TrainParams, overrides: Section) -> TrainParams:
    """``train`` with the keys ``overrides`` sets (those of its augment key by key)."""
    changes = {key: getattr(overrides, key) for key in overrides.model_fields_set}
    if changes.get("augment", False) is None:  # `augment: null`: nothing of it overridden
        del changes["augment"]
    if "augment" in changes:
        augment = changes["augment"]
        changes["augment"] = train.augment.model_copy(
            update={key: getattr(augment, key) for key in augment.model_fields_set}
        )
    return train.model_copy(update=changes)


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
    """One model's own settings. ``train`` is shared by all models; a model's own ``train``
    overrides keys of it for that model alone (a 224 px transfer teacher and a from-scratch
    student want different recipes in one experiment)."""

    arch: Annotated[str, Field(min_length=1)]
    pretrained: bool | str
    # 1,024 px: four times the largest input timm's ImageNet models are made for; beyond it a
    # CIFAR image is upsampled to no purpose and a batch no longer fits any memory
    img_size: Annotated[StrictInt, Field(ge=1, le=1024)] | None = None
    lr_scale: PositiveFloat = 1.0
    freezing: FreezingParams = FreezingParams()
    train: TrainOverrides = Field(default_factory=TrainOverrides)  # type: ignore[arg-type]


def model_training(train: TrainParams, model: ModelParams) -> TrainParams:
    """What ``model`` trains with: ``train``, with the keys of its own ``train`` instead."""
    return overridden(train, model.train)


def training_key(name: str, model: ModelParams, key: str) -> str:
    """Where model ``name``'s value of train key ``key`` comes from: its own or the shared."""
    return f"models.{name}.train.{key}" if key in model.train.model_fields_set else f"train.{key}"


class DistillParams(Section):
    """One student of ``distill``: the net of ``models.<student>``, trained as train@<student>
    trains it, but taught by the trained ``models.<teacher>`` too (stages/distill.py)."""

    teacher: Annotated[str, Field(min_length=1)]
    student: Annotated[str, Field(min_length=1)]
    temperature: PositiveFloat  # the teacher's and the student's logits divided by it
    alpha: Share  # the teacher's share of the loss; 1 - alpha on the labels (0: labels only)


def check_distill(distill: Mapping[str, DistillParams], models: Mapping[str, object]) -> None:
    """Each student names its teacher and its net among the models, and takes no model's name
    (they share folders). Teacher and student may be the same model: a trained net teaching a
    fresh copy of itself (a "born-again" network) is distillation too."""
    for name, entry in distill.items():
        if name in models:
            raise ParamsError(
                f"distill.{name}: a model of that name exists (models.{name}); a student "
                "needs a name of its own (its outputs go to models/<name>/)"
            )
        for role in ("teacher", "student"):
            if getattr(entry, role) not in models:
                raise ParamsError(
                    f"distill.{name}.{role}: '{getattr(entry, role)}' is not a key of models "
                    f"(defined: {', '.join(models)})"
                )


def learning_rate(train: TrainParams, model: ModelParams) -> float:
    """The learning rate a model trains at: train.lr x its lr_scale."""
    return train.lr * model.lr_scale


def check_training(shared: TrainParams, models: Mapping[str, ModelParams]) -> None:
    """What the training sections must agree on, for each model with its own overrides;
    ParamsError with one line otherwise."""
    for name, model in models.items():
        train = model_training(shared, model)
        schedule = model.freezing.schedule
        if schedule and schedule[-1] >= train.epochs:
            raise ParamsError(
                f"models.{name}.freezing.schedule: epoch {schedule[-1]} is past the last epoch "
                f"({training_key(name, model, 'epochs')}={train.epochs}, epochs count from 0)"
            )
        augment = train.augment
        if (augment.cutmix > 0 or augment.mixup > 0) and train.batch_size % 2:
            raise ParamsError(
                f"{training_key(name, model, 'batch_size')}: CutMix/MixUp pair images within a "
                f"batch and need an even batch size, got {train.batch_size}"
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
        f"train.{location[2]}; models.{location[1]}.train.{location[2]} sets it for this "
        f"model alone (per-model keys: {', '.join(known)})"
    )
