"""The schema of the data sections: downloads, data, validate, eda."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt

from stages.common.plumbing.param_types import (
    Fraction,
    NonNegativeFloat,
    PositiveInt,
    Section,
    Share,
)


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
