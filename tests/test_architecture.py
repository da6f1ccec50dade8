"""The library's layers: stages/common/ is a stack of packages, each importing only the ones
below it, so that the tree shows the architecture and stays that way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

LIBRARY = ROOT / "stages" / "common"
# bottom to top: a package may import its own modules and those of the packages before it
LAYERS = [
    "plumbing",  # starting a command, errors, files, paths, the machine, reading params
    "config",  # the params schema by section, the whole file, overrides, presets
    "data",  # sources, the split, the prepared data, its checks and profile
    "models",  # building models, checkpoints, inference
    "evaluation",  # metrics, figures, explanations, corruptions, the evaluate stage's steps
    "training",  # the loop, augmentation, freezing, optimizers, resumable state
    "tuning",  # a sweep's storage, a trial's link to its study
    "monitoring",  # a served model's metrics, drift against its reference, an A/B test
    "release",  # the released model, ONNX, the prediction service
    "preflight",  # what a run will execute and what it will cost
    "reporting",  # the experiments as one table, a sweep's summary
]


def imported_packages(path: Path) -> set[str]:
    """The library packages ``path`` imports (type-checking imports too: a layer is a layer)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["stages", "common"] and len(parts) > 2:
                found.add(parts[2])
    return found


def test_the_library_is_the_layers_and_nothing_else():
    packages = {path.name for path in LIBRARY.iterdir() if path.is_dir() and path.name[0] != "_"}
    loose = [path.name for path in LIBRARY.glob("*.py") if path.name != "__init__.py"]
    assert packages == set(LAYERS)
    assert not loose, f"modules outside a package: {loose}"


@pytest.mark.parametrize("layer", LAYERS)
def test_a_package_imports_only_the_layers_below_it(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    for path in sorted((LIBRARY / layer).glob("*.py")):
        above = imported_packages(path) - allowed
        assert not above, f"{path.relative_to(ROOT)} imports {sorted(above)}, above {layer}"


def test_the_check_sees_an_import_from_above(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from stages.common.data.prepared import PreparedData\n"
        "if TYPE_CHECKING:\n    from stages.common.training import trainer\n"
    )
    assert imported_packages(module) == {"data", "training"}
