"""One process's part of a sweep: the study it joins, the model it tunes, the params every
trial starts from, where the sweep's files go."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.config.params import Params
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
