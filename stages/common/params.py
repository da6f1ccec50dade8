"""Load and check ``params.yaml`` once, up front.

Every stage calls :func:`load_params` before doing any work, so a typo anywhere in the file
stops the stage with one line naming the key and nothing is written. The schema holds no
defaults for the shared sections: params.yaml is the one place their values live. Only the
optional per-model keys (``img_size``, ``lr_scale``, ``freezing``) have defaults here.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from stages.common.errors import ParamsError
from stages.common.validation_errors import describe, known_keys, suggestion
from stages.common.yamlfile import load_yaml

PARAMS_FILE = Path("params.yaml")

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
TtaMode = Literal["none", "flip", "flip_translate"]  # see stages/common/inference.py
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]


class Section(BaseModel):
    """A params section: unknown keys are errors, numbers must be finite (a `.inf` or `.nan`
    is refused here, not met by the scheduler mid-run), values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Download(Section):
    url: str
    md5: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    path: str


class DataParams(Section):
    source: Annotated[str, Field(min_length=1)]
    classes: Literal["cifar10", "any"]
    val_ratio: Fraction
    subset: PositiveInt | None
    on_bad_image: Literal["skip", "fail"]


class ValidateParams(Section):
    max_leakage: Share
    max_imbalance: Annotated[float, Field(ge=1.0)]
    blank_std: NonNegativeFloat
    drift_tolerance: NonNegativeFloat
    max_listed: PositiveInt


class EdaParams(Section):
    samples_per_class: PositiveInt
    hist_bins: Annotated[StrictInt, Field(ge=2, le=256)]


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


class ModelParams(Section):
    """One model's own settings; everything in ``train`` is shared by all models."""

    arch: Annotated[str, Field(min_length=1)]
    pretrained: bool | str
    # 1,024 px: four times the largest input timm's ImageNet models are made for; beyond it a
    # CIFAR image is upsampled to no purpose and a batch no longer fits any memory
    img_size: Annotated[StrictInt, Field(ge=1, le=1024)] | None = None
    lr_scale: PositiveFloat = 1.0
    freezing: FreezingParams = FreezingParams()


CorruptionName = Literal[  # stages/common/corruptions.py, in CIFAR-10-C's order
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
]
Severity = Annotated[StrictInt, Field(ge=1, le=5)]


class RobustnessParams(Section):
    """Accuracy under CIFAR-10-C's corruptions, generated from a seeded subset of the test split."""

    enabled: bool
    corruptions: Annotated[list[CorruptionName], Field(min_length=1)]
    severities: Annotated[list[Severity], Field(min_length=1)]
    images: PositiveInt | None  # None: the whole test split

    @field_validator("corruptions", "severities")
    @classmethod
    def _no_repeats(cls, values: list) -> list:
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"listed more than once: {', '.join(repeated)}")
        return values


class EvaluateParams(Section):
    batch_size: PositiveInt
    tta: TtaMode
    calibration_bins: Annotated[StrictInt, Field(ge=2)]
    grid_size: PositiveInt
    gradcam_samples: PositiveInt
    tsne_samples: PositiveInt
    tsne_perplexity: Annotated[float, Field(gt=1.0)]
    robustness: RobustnessParams


class CompareParams(Section):
    metric: Literal["accuracy", "f1_weighted", "loss", "ece", "mca"]


class ExportParams(Section):
    tolerance: Annotated[float, Field(gt=0.0)]
    latency_runs: Annotated[StrictInt, Field(ge=1)]
    # at most the ONNX graph's batch axis (stages/common/onnx_export.py, MAX_BATCH)
    latency_batches: Annotated[
        list[Annotated[StrictInt, Field(ge=1, le=4096)]], Field(min_length=1)
    ]


class Distribution(Section):
    """One hyperparameter of the search space: float (optionally log), int or categorical."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: PositiveFloat | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check_range(self) -> Distribution:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("choices: a categorical needs a non-empty list of choices")
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("a categorical takes `choices`, not low/high/log")
            return self
        if self.choices is not None:
            raise ValueError(f"choices: a {self.type} takes low/high, not choices")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} needs both low and high")
        if self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log: a log-scale range needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("step: Optuna cannot combine step with log")
        if self.type == "int" and not (float(self.low).is_integer() and self.high.is_integer()):
            raise ValueError(f"an int range needs whole bounds, got {self.low}..{self.high}")
        if self.type == "int" and self.step is not None and not self.step.is_integer():
            raise ValueError(f"step: an int range needs a whole step, got {self.step}")
        return self


class TuneParams(Section):
    study: str | None
    storage: str | None
    objective: Literal["val_loss", "val_accuracy", "val_f1_weighted"]
    trials: PositiveInt
    timeout_minutes: PositiveFloat | None
    sampler: Literal["tpe", "random"]
    pruner: Literal["median", "hyperband", "none"]
    startup_trials: NonNegativeInt
    epochs: PositiveInt | None
    space: dict[str, Distribution]

    @field_validator("space")
    @classmethod
    def _not_empty(cls, space: dict[str, Distribution]) -> dict[str, Distribution]:
        if not space:
            raise ValueError("the search space is empty: name at least one params key")
        return space


class Params(Section):
    seed: Annotated[StrictInt, Field(ge=0, lt=2**32)]  # numpy's and torch's generators
    downloads: dict[str, Download]
    data: DataParams
    validate_: ValidateParams = Field(alias="validate")
    eda: EdaParams
    train: TrainParams
    models: dict[str, ModelParams]
    evaluate: EvaluateParams
    compare: CompareParams
    export: ExportParams
    tune: TuneParams

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    @field_validator("models")
    @classmethod
    def _names_fit_paths(cls, models: dict[str, ModelParams]) -> dict[str, ModelParams]:
        if not models:
            raise ValueError("no models: name at least one (the pipeline trains and compares them)")
        for name in models:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
                raise ValueError(
                    f"'{name}' is not a valid model name (it names stages and folders: "
                    "letters, digits, '_' and '-')"
                )
        return models

    def model(self, name: str) -> ModelParams:
        if name not in self.models:
            raise ParamsError(
                f"models.{name}: no such model in params.yaml ({_listing(self.models)})"
            )
        return self.models[name]

    def learning_rate(self, name: str) -> float:
        """The learning rate model ``name`` trains at: train.lr x its lr_scale."""
        return self.train.lr * self.model(name).lr_scale


def _listing(names: Any) -> str:
    return "defined: " + ", ".join(names) if names else "none defined"


def _describe(error: ValidationError) -> str:
    """The first problem as one line; a training key under a model gets where it belongs."""
    first = error.errors()[0]
    location = first["loc"]
    shared = first["type"] == "extra_forbidden" and len(location) == 3
    if shared and location[0] == "models" and location[2] in TrainParams.model_fields:
        known = known_keys(Params, location[:-1])
        return (
            f"{'.'.join(map(str, location))}: unknown key: every model shares "
            f"train.{location[2]} (per-model keys: {', '.join(known)}; "
            "models.<name>.lr_scale scales the learning rate)"
        )
    return describe(error, Params)


def parse_params(raw: Any, source: str = str(PARAMS_FILE)) -> Params:
    """Check a parsed params mapping; raises ParamsError with one line naming the key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_describe(error)) from None
    _check_cross_section(params)
    _check_search_space(raw, params)
    return params


def _check_cross_section(params: Params) -> None:
    train = params.train
    for name, model in params.models.items():
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


def _check_search_space(raw: dict[str, Any], params: Params) -> None:
    """Every search-space key names a single params value, and every value the space can
    propose (both bounds, every choice) is a valid value of that key."""
    for key, distribution in params.tune.space.items():
        _check_search_key(params, key)
        if distribution.type == "categorical":
            candidates = list(distribution.choices or [])
        elif distribution.type == "int":
            candidates = [int(distribution.low), int(distribution.high)]  # type: ignore[arg-type]
        else:
            candidates = [distribution.low, distribution.high]
        for value in candidates:
            trial = copy.deepcopy(raw)
            set_dotted(trial, key, value)
            try:
                Params.model_validate(trial)
            except ValidationError as error:
                reason = _describe(error).partition(": ")[2]
                raise ParamsError(
                    f"tune.space.{key}: {value!r} is not a valid {key} ({reason})"
                ) from None


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """``tree['a']['b'] = value`` for ``key`` 'a.b'."""
    *parents, last = key.split(".")
    for part in parents:
        tree = tree[part]
    tree[last] = value


def _check_search_key(params: Params, key: str) -> None:
    """A search-space key must name an existing scalar params key (one-line error otherwise)."""
    node: Any = params.model_dump(by_alias=True)
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            known = sorted(node) if isinstance(node, dict) else []
            where = ".".join(walked) or "params.yaml"
            raise ParamsError(
                f"tune.space.{key}: '{part}' is not a key of {where}{suggestion(part, known)}"
            )
        node = node[part]
        walked.append(part)
    if isinstance(node, dict | list):
        raise ParamsError(f"tune.space.{key}: names a section, not a single value")


def read_params_file(path: Path | str = PARAMS_FILE) -> Any:
    """The parsed YAML of ``path``; a syntax error, a duplicate key, text that is not UTF-8 or
    an alias bomb is one line (stages/common/yamlfile.py)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root)")
    return load_yaml(path)


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and check ``params.yaml``."""
    return parse_params(read_params_file(path), str(path))
