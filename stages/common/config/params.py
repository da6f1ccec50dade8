"""Load and check the whole ``params.yaml`` at once: check_params, preflight, sweeps, presets.

A DVC stage checks only the sections it reads (stages/common/plumbing/stage_params.py), so that
editing one section's schema re-runs only the stages that read it; this module checks them all and
what they must agree on across sections, which run.sh does before every run. The schema holds no
defaults for the shared sections: params.yaml is the one place their values live. Only the optional
per-model keys (``img_size``, ``lr_scale``, ``freezing``) have defaults.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError

from stages.common.config.data import DataParams, Download, EdaParams, ValidateParams
from stages.common.config.evaluation import CompareParams, EvaluateParams
from stages.common.config.release import ExportParams
from stages.common.config.training import (
    DistillParams,
    ModelParams,
    TrainParams,
    check_distill,
    check_training,
    learning_rate,
    misplaced_training_key,
    model_training,
)
from stages.common.config.tuning import TuneParams
from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.param_types import Section, Seed
from stages.common.plumbing.params_errors import describe, suggestion
from stages.common.plumbing.stage_params import (
    PARAMS_FILE,
    NamedModels,
    NamedStudents,
    check_sections,
    model_entry,
    read_params_file,
)


class Params(Section):
    seed: Seed
    downloads: dict[str, Download]
    data: DataParams
    validate_: ValidateParams = Field(alias="validate")
    eda: EdaParams
    train: TrainParams
    models: NamedModels[ModelParams]
    distill: NamedStudents[DistillParams]
    evaluate: EvaluateParams
    compare: CompareParams
    export: ExportParams
    tune: TuneParams

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    def model(self, name: str) -> ModelParams:
        return model_entry(self.models, name)

    def training(self, name: str) -> TrainParams:
        """What model ``name`` trains with: `train` and its own overrides of it."""
        return model_training(self.train, self.model(name))

    def learning_rate(self, name: str) -> float:
        """The learning rate model ``name`` trains at: its train.lr x its lr_scale."""
        return learning_rate(self.training(name), self.model(name))


def _describe(error: ValidationError) -> str:
    """The first problem as one line; a training key under a model gets where it belongs."""
    return misplaced_training_key(error, Params) or describe(error, Params)


def parse_params(raw: Any, source: str = str(PARAMS_FILE)) -> Params:
    """Check a parsed params mapping; raises ParamsError with one line naming the key."""
    check_sections(raw, source)
    try:
        params = Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_describe(error)) from None
    check_training(params.train, params.models)
    check_distill(params.distill, params.models)
    _check_search_space(raw, params)
    return params


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


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and check ``params.yaml``."""
    return parse_params(read_params_file(path), str(path))
