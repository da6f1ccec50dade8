"""One process's part of a sweep: the study it joins, the model it tunes, the params every
trial starts from, where the sweep's files go."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.config.params import Params
from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.output_paths import SWEEPS_DIR


@dataclass
class Sweep:
    """One process's part of a study."""

    params: Params
    raw: dict[str, Any]  # params.yaml with the command line's overrides, for checking trials
    model: str
    study_name: str
    storage_url: str
    epochs: int
    overrides: list[str]  # the command line's -S, applied to every trial
    failures_in_a_row: int = 0
    last_failure: str = ""

    @property
    def folder(self) -> Path:
        return SWEEPS_DIR / self.study_name

    def experiment_name(self, number: int) -> str:
        """Trial ``number`` (Optuna's, from 0) as everything here names it: from 1."""
        return f"{self.study_name}-t{number + 1:03d}"


def short_value(value: Any) -> str:
    """A trial's param as logs and tables show it: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def refuse_overridden_space(params: Params, model: str) -> None:
    """A searched `train` key the swept model overrides would move nothing: one line."""
    own = params.model(model).train.model_fields_set
    for key in params.tune.space:
        section, _, train_key = key.partition(".")
        if section == "train" and train_key.split(".")[0] in own:
            raise ParamsError(
                f"tune.space.{key}: models.{model}.train.{train_key.split('.')[0]} overrides "
                f"it for {model}; search models.{model}.train.{train_key} instead"
            )


def epochs_key(params: Params, model: str) -> str:
    """Where a trial's epochs go: train.epochs, or the model's own when it overrides it."""
    own = "epochs" in params.model(model).train.model_fields_set
    return f"models.{model}.train.epochs" if own else "train.epochs"
