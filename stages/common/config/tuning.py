"""The schema of the sweep's section: tune and its search space."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from stages.common.plumbing.param_types import NonNegativeInt, PositiveFloat, PositiveInt, Section


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

    def trial_epochs(self, asked: int | None, train_epochs: int) -> int:
        """The epochs of a sweep's trial: --epochs when given, else tune.epochs, else
        train.epochs."""
        return asked or self.epochs or train_epochs

    @field_validator("space")
    @classmethod
    def _not_empty(cls, space: dict[str, Distribution]) -> dict[str, Distribution]:
        if not space:
            raise ValueError("the search space is empty: name at least one params key")
        return space
