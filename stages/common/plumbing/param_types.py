"""What every params section shares: strict sections and the value types they are made of.

The schema is split by the stages that read it (stages/common/config/: data.py, training.py,
evaluation.py, release.py, tuning.py), so that editing one section's schema re-runs only the
stages that read that section; this module is what all of them share.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
TtaMode = Literal["none", "flip", "flip_translate"]  # see stages/common/models/inference.py
PositiveInt = Annotated[StrictInt, Field(ge=1)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]


Seed = Annotated[StrictInt, Field(ge=0, lt=2**32)]  # numpy's and torch's generators


class Section(BaseModel):
    """A params section: unknown keys are errors, numbers must be finite (a `.inf` or `.nan`
    is refused here, not met by the scheduler mid-run), values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
