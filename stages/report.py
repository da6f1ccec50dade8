"""report: this workspace against a base revision, as the markdown a merge request shows.

    python -m stages.report --base main                 # writes report.md and report/*.png
    python -m stages.report --base origin/main --include benchmarks/results/summary.md

Sections: the metrics that changed (`dvc metrics diff --md`), the params that changed
(`dvc params diff --md`), the model comparison table, and every plot that changed: DVC's data
plots rendered to PNG (base and workspace overlaid, as `dvc plots diff` draws them) and the
pipeline's PNG figures side by side. CI posts the file with `cml comment update`; run locally,
it is the same report, offline.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.common.plumbing.command import run_command
from stages.common.plumbing.errors import DataError, first_line
from stages.common.plumbing.files import write_text
from stages.common.plumbing.output_paths import COMPARE_REPORT

log = logging.getLogger("report")
MAX_IMAGES = 40


@dataclass
class ChangedPlot:
    name: str
    images: list[tuple[str, Path]]  # (caption, file), written under the images folder


def dvc(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DataError(f"`dvc {' '.join(args)}` failed: {first_line(result.stderr)}")
    return result.stdout


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def _values(spec: dict[str, Any]) -> dict[str, list]:
    """A vega-lite spec's data points per revision, without the revision field."""
    by_revision: dict[str, list] = {}
    for point in spec.get("data", {}).get("values", []):
        point = dict(point)
        by_revision.setdefault(str(point.pop("rev", "")), []).append(point)
    return by_revision


def changed_plots(base: str, images: Path) -> list[ChangedPlot]:
    """The plots that differ between ``base`` and the workspace, rendered into ``images``."""
    import vl_convert

    with tempfile.TemporaryDirectory() as folder:
        shown = json.loads(dvc("plots", "diff", base, "--json", "-o", folder))
        changed = []
        for name, entries in shown.get("data", {}).items():
            if entries and entries[0].get("type") == "vega":
                spec = entries[0]["content"]
                revisions = _values(spec)
                if len(set(map(json.dumps, revisions.values()))) == 1 and len(revisions) > 1:
                    continue  # the same data in both revisions
                target = images / f"{slug(name)}.png"
                target.write_bytes(vl_convert.vegalite_to_png(spec, scale=1.5))
                changed.append(ChangedPlot(name, [("", target)]))
            elif entries:
                files = {rev: Path(e["url"]) for e in entries for rev in e.get("revisions", [])}
                blobs = {rev: path.read_bytes() for rev, path in files.items() if path.is_file()}
                if len(blobs) == 2 and len(set(blobs.values())) == 1:
                    continue
                pictures = []
                for rev in (base, "workspace"):
                    if rev in blobs:
                        target = images / f"{slug(rev)}_{slug(name)}.png"
                        target.write_bytes(blobs[rev])
                        pictures.append((rev, target))
                changed.append(ChangedPlot(name, pictures))
        for error in shown.get("errors", []):
            log.info("plots: %s at %s: %s", error.get("name"), error.get("rev"), error.get("type"))
    return sorted(changed, key=lambda plot: _priority(plot.name))


PRIORITY = ("dvclive/", "plots/compare", "evaluation/", "plots/evaluate", "plots/eda")


def _priority(name: str) -> tuple[int, str]:
    """Training curves first, then comparison, evaluation and EDA figures (the report shows
    the first MAX_IMAGES images)."""
    rank = next((i for i, prefix in enumerate(PRIORITY) if name.startswith(prefix)), len(PRIORITY))
    return rank, name


def comparison_table() -> str:
    """The comparison table of the workspace (reports/comparison.md without its heading)."""
    if not COMPARE_REPORT.is_file():
        return "_No comparison: the compare stage has not run in this workspace._"
    lines = COMPARE_REPORT.read_text().splitlines()
    return "\n".join(line for line in lines[1:] if not line.startswith("![")).strip()


def render(base: str, plots: list[ChangedPlot], includes: list[Path], root: Path) -> str:
    metrics = dvc("metrics", "diff", base, "--md").strip() or "_No metric changed._"
    params = dvc("params", "diff", base, "--md").strip() or "_No param changed._"
    lines = [
        f"# CIFAR-10 pipeline: this branch against `{base}`",
        "",
        "## Metrics that changed",
        "",
        metrics,
        "",
        "## Params that changed",
        "",
        params,
        "",
        "## Model comparison (this branch)",
        "",
        comparison_table(),
        "",
        f"## Plots that changed ({len(plots)})",
        "",
    ]
    shown = 0
    for number, plot in enumerate(plots):
        if shown >= MAX_IMAGES:
            lines.append(f"_{len(plots) - number} more changed plots not shown._")
            break
        lines.append(f"### {plot.name}")
        lines.append("")
        if len(plot.images) == 1 and not plot.images[0][0]:
            lines.append(f"![{plot.name}]({plot.images[0][1].relative_to(root).as_posix()})")
        else:
            header = " | ".join(caption for caption, _ in plot.images)
            cells = " | ".join(
                f"![{caption}]({path.relative_to(root).as_posix()})"
                for caption, path in plot.images
            )
            lines += [f"| {header} |", "|" + "---|" * len(plot.images), f"| {cells} |"]
        lines.append("")
        shown += len(plot.images)
    if not plots:
        lines += ["_No plot changed._", ""]
    for include in includes:
        if include.is_file():
            lines += [include.read_text().strip(), ""]
        else:
            log.warning("%s: not found, not included", include)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="the revision to compare against")
    parser.add_argument("--out", type=Path, default=Path("report.md"))
    parser.add_argument(
        "--include", type=Path, action="append", default=[], help="markdown to append"
    )
    args = parser.parse_args()
    root = args.out.parent
    images = root / "report"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir(parents=True)
    plots = changed_plots(args.base, images)
    write_text(args.out, render(args.base, plots, args.include, root))
    log.info("%s: %d changed plots against %s", args.out, len(plots), args.base)


if __name__ == "__main__":
    run_command(main)
