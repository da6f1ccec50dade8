"""The project files a module runs: its import closure within stages/, found by reading the
sources (imports under ``if TYPE_CHECKING:`` do not count). It decides what a stage's
result depends on: dvc.yaml's code deps (scripts/dvc_deps.py writes them) and the fingerprint
that says whether a half-finished training run may resume (stages/common/training/resume.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


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
    found: set[str] = set()
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


def import_closure(module: str) -> list[str]:
    """The project files ``module`` needs, itself included, as sorted repository paths."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        file = module_file(name)
        if file is not None and file.exists():
            pending.extend(imported_modules(file))
    files = {module_file(name) for name in seen}
    return sorted(
        str(file.relative_to(ROOT))
        for file in files
        if file is not None and file.exists() and file.name != "__init__.py"
    )
