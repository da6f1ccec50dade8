"""What a DVC stage checks of params.yaml: the sections it reads, and no more.

A stage re-runs when code it imports changes (dvc.yaml's code deps are its import closure).
Were every stage to check the whole file against the whole schema, an edit of the export
section's schema would re-train every model. So each stage declares the sections it reads as a
:class:`StageParams` model of their section classes (stages/common/config/) and checks them
as strictly as the whole file is checked: unknown keys, types and ranges, one line naming the
key, before any work. It also refuses a top-level key that is no section at all. The checks
across all sections (the search space's values, a freezing schedule against another model's
epochs) are check_params' (stages/common/config/params.py), which run.sh runs before every run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.params_errors import describe, suggestion
from stages.common.plumbing.strict_yaml import load_yaml

PARAMS_FILE = Path("params.yaml")
# params.yaml's sections (Params' fields, tests/test_params.py holds them equal)
SECTIONS = (
    "seed",
    "downloads",
    "data",
    "validate",
    "eda",
    "train",
    "models",
    "distill",
    "evaluate",
    "compare",
    "export",
    "tune",
)


def _names_fit_paths(models: dict[str, Any]) -> dict[str, Any]:
    if not models:
        raise ValueError("no models: name at least one (the pipeline trains and compares them)")
    return _valid_names(models)


def _valid_names(models: dict[str, Any]) -> dict[str, Any]:
    for name in models:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
            raise ValueError(
                f"'{name}' is not a valid model name (it names stages and folders: "
                "letters, digits, '_' and '-')"
            )
    return models


Entry = TypeVar("Entry")
# `models`, its names checked: they name stages and folders
NamedModels = Annotated[dict[str, Entry], AfterValidator(_names_fit_paths)]
# `distill`: its students name stages and folders as models do; there may be none
NamedStudents = Annotated[dict[str, Entry], AfterValidator(_valid_names)]


class StageParams(BaseModel):
    """The sections one stage reads; the file's other sections are not its business."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, allow_inf_nan=False)

    def check(self) -> None:
        """Checks across this stage's sections, once each section passed its own."""

    @classmethod
    def explain(cls, error: ValidationError) -> str:
        """The first problem of ``error`` as one line."""
        return describe(error, cls)


Loaded = TypeVar("Loaded", bound=StageParams)


def model_entry(models: Mapping[str, Entry], name: str) -> Entry:
    """``models[name]``; an unknown name is one line listing the defined ones."""
    if name not in models:
        defined = "defined: " + ", ".join(models) if models else "none defined"
        raise ParamsError(f"models.{name}: no such model in params.yaml ({defined})")
    return models[name]


def read_params_file(path: Path | str = PARAMS_FILE) -> Any:
    """The parsed YAML of ``path``; a syntax error, a duplicate key, text that is not UTF-8 or
    an alias bomb is one line (stages/common/plumbing/strict_yaml.py)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root)")
    return load_yaml(path)


def check_sections(raw: Any, source: str) -> dict[str, Any]:
    """``raw`` as a mapping whose keys are all sections; ParamsError with one line otherwise."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    for key in raw:
        if key not in SECTIONS:
            raise ParamsError(f"{key}: unknown key{suggestion(str(key), list(SECTIONS))}")
    return raw


def load_stage_params(model: type[Loaded], path: Path | str = PARAMS_FILE) -> Loaded:
    """Read params.yaml and check the sections ``model`` declares."""
    raw = check_sections(read_params_file(path), str(path))
    try:
        params = model.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(model.explain(error)) from None
    params.check()
    return params
