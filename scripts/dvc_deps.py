"""Write every stage's code deps in dvc.yaml (the import closure of its script within stages/)
and, from them, docs/pipeline.md's table of what editing each module re-runs.

    python scripts/dvc_deps.py           # rewrite the .py deps of dvc.yaml's stages, the table
    python scripts/dvc_deps.py --check   # exit 1, naming the stages whose deps drifted

A stage must re-run when code it runs changes, and only then: editing a plot helper must not
re-train the models. So each stage lists exactly the project files its `python -m stages.<x>`
imports, directly or not (imports under `if TYPE_CHECKING:` do not count; package __init__
files hold no code). Other deps (data, outputs of earlier stages) stay as they are, and so does
the rest of the file (comments, order, formatting).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the closure is the project's

from stages.common.plumbing.import_graph import import_closure  # noqa: E402

PIPELINE = ROOT / "dvc.yaml"
RERUN_DOC = ROOT / "docs" / "pipeline.md"
TABLE_START = "<!-- rerun table: written by scripts/dvc_deps.py -->"
TABLE_END = "<!-- end of rerun table -->"


def stage_body(stage: dict[str, Any]) -> dict[str, Any]:
    """A stage's definition (the `do` of a foreach stage)."""
    return stage.get("do") or stage


def stage_module(stage: dict[str, Any]) -> str:
    return stage_body(stage)["cmd"].split()[2]  # python -m stages.<name> ...


def with_code_deps(deps: list[str], code: list[str]) -> list[str]:
    """``deps`` with its .py entries replaced by ``code``, placed where the first one was (or
    after the other deps)."""
    others = [dep for dep in deps if not str(dep).endswith(".py")]
    first = next((i for i, dep in enumerate(deps) if str(dep).endswith(".py")), None)
    at = len(others) if first is None else sum(1 for dep in deps[:first] if dep in others)
    return [*others[:at], *code, *others[at:]]


def _yaml():
    from ruamel.yaml import YAML  # DVC's own YAML library, so the round trip keeps the file

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 100
    return yaml


def drifted(pipeline: dict[str, Any]) -> dict[str, tuple[list[str], list[str]]]:
    """Stage name -> (missing, not imported) for every stage whose code deps are wrong."""
    result = {}
    for name, stage in pipeline["stages"].items():
        expected = set(import_closure(stage_module(stage)))
        declared = {dep for dep in stage_body(stage)["deps"] if str(dep).endswith(".py")}
        if declared != expected:
            result[name] = (sorted(expected - declared), sorted(declared - expected))
    return result


def stage_label(name: str, stage: dict[str, Any]) -> str:
    """``train@<m>`` for a stage per model, ``distill@<student>`` per student,
    ``download@<name>`` per download, else ``name``."""
    each = {"${models}": "<m>", "${distill}": "<student>"}
    return f"{name}@{each.get(stage['foreach'], '<name>')}" if "foreach" in stage else name


def reruns(pipeline: dict[str, Any]) -> dict[str, list[str]]:
    """Project file -> the stages an edit of it re-runs (dvc.yaml's order)."""
    result: dict[str, list[str]] = {}
    for name, stage in pipeline["stages"].items():
        for path in import_closure(stage_module(stage)):
            result.setdefault(path, []).append(stage_label(name, stage))
    return result


def rerun_table(pipeline: dict[str, Any]) -> str:
    """The markdown table: each set of stages with the modules whose edit re-runs exactly it,
    the widest sets first."""
    every = [stage_label(name, stage) for name, stage in pipeline["stages"].items()]
    groups: dict[tuple[str, ...], list[str]] = {}
    for path, stages in reruns(pipeline).items():
        groups.setdefault(tuple(stages), []).append(path)
    lines = ["| editing | re-runs |", "|---|---|"]
    for stages, paths in sorted(groups.items(), key=lambda item: (-len(item[0]), item[1])):
        named = "every stage" if list(stages) == every else ", ".join(f"`{s}`" for s in stages)
        modules = ", ".join(f"`{path.removeprefix('stages/')}`" for path in sorted(paths))
        lines.append(f"| {modules} | {named} |")
    return "\n".join(lines) + "\n"


def with_table(document: str, table: str) -> str:
    """``document`` with the text between the table's markers replaced by ``table``."""
    start = document.index(TABLE_START) + len(TABLE_START)
    end = document.index(TABLE_END)
    return f"{document[:start]}\n{table}{document[end:]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 on drift")
    args = parser.parse_args()
    yaml = _yaml()
    pipeline = yaml.load(PIPELINE.read_text())
    problems = drifted(pipeline)
    document = RERUN_DOC.read_text()
    current = with_table(document, rerun_table(pipeline))
    table_stale = current != document
    if args.check:
        for name, (missing, extra) in problems.items():
            print(f"dvc.yaml stage {name}: missing {missing}, not imported {extra}")
        if table_stale:
            print(f"{RERUN_DOC.relative_to(ROOT)}: the rerun table is stale")
        if problems or table_stale:
            print("run: python scripts/dvc_deps.py")
        return 1 if problems or table_stale else 0
    if problems:
        for name in problems:
            stage = pipeline["stages"][name]
            deps = stage_body(stage)["deps"]
            deps[:] = with_code_deps(list(deps), import_closure(stage_module(stage)))
        out = io.StringIO()
        yaml.dump(pipeline, out)
        PIPELINE.write_text(out.getvalue())
        print(f"dvc.yaml: code deps of {', '.join(problems)} rewritten")
    else:
        print("dvc.yaml: code deps up to date")
    if table_stale:
        RERUN_DOC.write_text(current)
        print(f"{RERUN_DOC.relative_to(ROOT)}: rerun table written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
