"""dvc.yaml against the code: every stage's code deps are exactly its import closure, and its
outputs are exactly the paths stages/common/layout.py gives the code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from stages.common import layout
from tests.conftest import ROOT

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = PIPELINE["stages"]


def module_file(module: str) -> Path | None:
    """The file of a module of this project (None for third-party modules)."""
    if not module.startswith("stages"):
        return None
    path = ROOT / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(path: Path) -> set[str]:
    """Project modules ``path`` imports at run time (``from stages.common import x`` counts x;
    imports under ``if TYPE_CHECKING:`` do not)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (file := module_file(candidate)) is not None and file.exists():
                    found.add(candidate)
    return {name for name in found if name.startswith("stages")}


def import_closure(module: str) -> set[str]:
    """The project files ``module`` needs, itself included, as repository paths; package
    __init__ files are left out (test_packages_hold_no_code keeps them empty)."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        pending.extend(imported_modules(module_file(name)))
    files = {module_file(name) for name in seen}
    return {
        str(file.relative_to(ROOT))
        for file in files
        if file is not None and file.exists() and file.name != "__init__.py"
    }


def test_packages_hold_no_code():
    for init in ROOT.glob("stages/**/__init__.py"):
        body = ast.parse(init.read_text()).body
        assert all(isinstance(node, ast.Expr) for node in body), f"{init} holds code"


def stage_module(stage: dict) -> str:
    command = (stage.get("do") or stage)["cmd"]
    return command.split()[2]  # python -m stages.<name> ...


def declared_code(stage: dict) -> set[str]:
    deps = (stage.get("do") or stage)["deps"]
    return {dep for dep in deps if dep.endswith(".py")}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_complete_import_closure(name):
    stage = STAGES[name]
    expected = import_closure(stage_module(stage))
    declared = declared_code(stage)
    assert declared == expected, (
        f"dvc.yaml stage {name}: missing {sorted(expected - declared)}, "
        f"not imported {sorted(declared - expected)}"
    )


def outputs(name: str) -> set[str]:
    """Every path stage ``name`` declares as an output (outs, metrics, plots)."""
    stage = STAGES[name].get("do") or STAGES[name]
    paths = set()
    for kind in ("outs", "metrics", "plots"):
        for entry in stage.get(kind, []):
            paths.add(entry if isinstance(entry, str) else next(iter(entry)))
    return paths


def test_stage_outputs_are_the_layout_paths():
    model = layout.paths("${key}")
    expected = {
        "prepare": {layout.PREPARED_DIR, layout.PREPARE_METRICS},
        "validate": {layout.VALIDATE_METRICS, layout.VALIDATION_REPORT},
        "eda": {layout.EDA_PLOTS, layout.EDA_REPORT, layout.EDA_DETAILS},
        "train": {
            model.model_dir,
            model.live_dir / "metrics.json",
            model.live_dir / "params.yaml",
            model.live_dir / "plots/metrics",
            model.train_metrics,
        },
        "evaluate": {
            model.predictions,
            model.evaluation_details,
            model.evaluate_metrics,
            model.evaluation_figures,
            model.evaluation_live / "plots/sklearn/confusion_matrix.json",
            model.evaluation_live / "plots/custom/risk_coverage.json",
        },
        "compare": {
            layout.RELEASE_DIR,
            layout.COMPARE_REPORT,
            layout.COMPARE_DETAILS,
            layout.COMPARE_METRICS,
            layout.COMPARE_PLOTS,
        },
    }
    for name, paths in expected.items():
        assert outputs(name) == {str(path) for path in paths}, name
    assert PIPELINE["artifacts"]["cifar10-classifier"]["path"] == str(layout.RELEASE_CHECKPOINT)


def test_small_results_go_to_git_and_large_ones_to_the_remote():
    """Metrics, plot data and reports are `cache: false` (git); data, models, predictions and
    images are cached (the DVC remote)."""
    for name, stage in STAGES.items():
        stage = stage.get("do") or stage
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                path, options = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
                small = path.endswith((".json", ".md", ".yaml")) or path.startswith("dvclive")
                assert options.get("cache", True) is not small, (name, path)


def test_every_model_stage_comes_from_the_models_section():
    for name in ("train", "evaluate"):
        assert STAGES[name]["foreach"] == "${models}"
    assert STAGES["download"]["foreach"] == "${downloads}"
    assert "${data.source}" in STAGES["prepare"]["deps"]


if __name__ == "__main__":  # print each stage's code deps, for pasting into dvc.yaml
    for stage_name, definition in STAGES.items():
        print(f"{stage_name}:")
        for dep in sorted(import_closure(stage_module(definition))):
            print(f"        - {dep}")
