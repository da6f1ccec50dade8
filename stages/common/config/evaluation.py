"""The schema of the evaluation sections: evaluate (with its robustness) and compare."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, field_validator

from stages.common.plumbing.param_types import PositiveInt, Section, TtaMode

CorruptionName = Literal[  # stages/common/evaluation/corruptions.py, in CIFAR-10-C's order
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
