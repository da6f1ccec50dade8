"""Load and check ``params.yaml`` once, up front.

Every stage calls :func:`load_params` before doing any work, so a typo anywhere in the
file stops the stage with one line naming the key and nothing is written.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from stages.common.errors import ParamsError

PARAMS_FILE = Path("params.yaml")

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]


class Section(BaseModel):
    """A params section: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataParams(Section):
    source: str = "torchvision"
    download_dir: str = "data/raw"
    val_ratio: Fraction = 0.1
    subset: PositiveInt | None = None
    on_bad_image: Literal["skip", "fail"] = "skip"


class ValidateParams(Section):
    max_leakage: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    max_imbalance: Annotated[float, Field(ge=1.0)] = 1.5
    blank_std: NonNegativeFloat = 2.0
    drift_tolerance: NonNegativeFloat = 0.05
    max_listed: PositiveInt = 20


class EdaParams(Section):
    samples_per_class: PositiveInt = 10
    hist_bins: Annotated[StrictInt, Field(ge=2, le=256)] = 64


class AugmentParams(Section):
    strategy: Literal["none", "standard", "aggressive", "randaugment", "trivialaugment"] = (
        "standard"
    )
    randaugment_magnitude: Annotated[StrictInt, Field(ge=0, le=30)] = 9
    randaugment_ops: PositiveInt = 2
    cutmix: NonNegativeFloat = 0.0
    mixup: NonNegativeFloat = 0.0
    mix_prob: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0


class TrainParams(Section):
    epochs: PositiveInt = 30
    batch_size: PositiveInt = 128
    lr: Annotated[float, Field(gt=0.0)] = 1e-3
    weight_decay: NonNegativeFloat = 0.05
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    scheduler: Literal["cosine", "step", "onecycle", "none"] = "cosine"
    warmup_epochs: NonNegativeInt = 1
    step_size: PositiveInt = 10
    gamma: Fraction = 0.1
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    grad_clip: Annotated[float, Field(gt=0.0)] | None = 1.0
    ema_decay: Fraction | None = None
    patience: PositiveInt | None = 5
    channels_last: Literal["auto", True, False] = "auto"
    amp: bool = True
    compile: bool = False
    workers: NonNegativeInt = 2
    augment: AugmentParams = AugmentParams()


class FreezingParams(Section):
    strategy: Literal["none", "freeze_backbone", "partial", "progressive", "layer_decay"] = "none"
    groups: NonNegativeInt = 0
    schedule: list[StrictInt] = []
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


TRAIN_KEYS = frozenset(TrainParams.model_fields)


class ModelParams(Section):
    """One model: its own settings plus optional overrides of any ``train`` key."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    arch: str
    pretrained: bool | str = True
    img_size: PositiveInt | None = None
    freezing: FreezingParams = FreezingParams()

    @model_validator(mode="after")
    def _check_overrides(self) -> ModelParams:
        for key in self.model_extra or {}:
            if key not in TRAIN_KEYS:
                raise _UnknownKey(key, sorted(set(type(self).model_fields) | TRAIN_KEYS))
        return self


class EvaluateParams(Section):
    batch_size: PositiveInt = 256
    tta: bool = False
    calibration_bins: Annotated[StrictInt, Field(ge=2)] = 15
    grid_size: PositiveInt = 16
    gradcam_samples: PositiveInt = 8
    tsne_samples: PositiveInt = 1000
    tsne_perplexity: Annotated[float, Field(gt=1.0)] = 30.0


class CompareParams(Section):
    metric: Literal["accuracy", "f1_weighted", "f1_macro", "loss", "ece"] = "accuracy"


class Params(Section):
    seed: StrictInt = 42
    data: DataParams = DataParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    eda: EdaParams = EdaParams()
    train: TrainParams = TrainParams()
    models: dict[str, ModelParams] = {}
    evaluate: EvaluateParams = EvaluateParams()
    compare: CompareParams = CompareParams()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def model_train_params(self, name: str) -> TrainParams:
        """``train`` with ``models.<name>.<key>`` overrides applied (nested ones merged)."""
        if name not in self.models:
            raise ParamsError(
                f"models.{name}: no such model in params.yaml ({_listing(self.models)})"
            )
        merged = _deep_merge(self.train.model_dump(), self.models[name].model_extra or {})
        try:
            return TrainParams.model_validate(merged)
        except ValidationError as error:
            raise ParamsError(_describe(error, prefix=f"models.{name}")) from None


class _UnknownKey(ValueError):
    def __init__(self, key: str, known: list[str]) -> None:
        super().__init__(f"{key}: unknown key{_suggestion(key, known)}")


def _suggestion(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"


def _listing(names: Any) -> str:
    return "defined: " + ", ".join(names) if names else "none defined"


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_UNION_MEMBER_TAGS = ("function-", "constrained-", "literal[")


def _is_key(part: Any) -> bool:
    """Pydantic puts the union member it tried into an error's location; keep the keys only."""
    text = str(part)
    return text not in ("bool", "str", "int", "float", "none") and not text.startswith(
        _UNION_MEMBER_TAGS
    )


def _describe(error: ValidationError, prefix: str = "") -> str:
    """The first problem as one line: ``key.path: what is wrong (got value)``."""
    first = error.errors()[0]
    location = [str(part) for part in first["loc"] if _is_key(part)]
    key = ".".join(([prefix] if prefix else []) + location)
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = _known_keys(first["loc"][:-1])
        return f"{key}: unknown key{_suggestion(str(first['loc'][-1]), known)}"
    if first["type"] == "missing":
        return f"{key}: required key is missing"
    if ": " in message and first["type"] == "value_error":
        nested, _, message = message.partition(": ")
        key = f"{key}.{nested}" if key else nested
        return f"{key}: {message}"
    return f"{key}: {message} (got {first.get('input')!r})"


def _known_keys(location: tuple[Any, ...]) -> list[str]:
    """Field names accepted at ``location`` (a path into Params)."""
    model: type[BaseModel] = Params
    parts = list(location)
    while parts:
        part = parts.pop(0)
        if model is Params and part == "models":
            if not parts:
                return []
            parts.pop(0)  # the model's name
            model = ModelParams
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted((f.alias or name) for name, f in model.model_fields.items())


def parse_params(raw: Any, source: str = str(PARAMS_FILE)) -> Params:
    """Check a parsed params mapping; raises ParamsError with one line naming the key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_describe(error)) from None
    _check_cross_section(params)
    return params


def _check_cross_section(params: Params) -> None:
    for name in params.models:
        train = params.model_train_params(name)
        freezing = params.models[name].freezing
        if freezing.schedule and freezing.schedule[-1] >= train.epochs:
            raise ParamsError(
                f"models.{name}.freezing.schedule: epoch {freezing.schedule[-1]} is past "
                f"the last epoch (epochs={train.epochs}, epochs count from 0)"
            )
        augment = train.augment
        if (augment.cutmix > 0 or augment.mixup > 0) and train.batch_size % 2:
            raise ParamsError(
                f"models.{name}: CutMix/MixUp pair images within a batch and need an even "
                f"train.batch_size, got {train.batch_size}"
            )


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and check ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}:{where} is not valid YAML ({error})") from None
    return parse_params(raw, str(path))
