"""The experiments as one table (stages/show.py prints it): which rows DVC lists, which
columns (the params that differ between the rows, the headline metrics), in what order, what
goes first when the width is short, sorted how, rendered as text or markdown."""

from __future__ import annotations

import contextlib
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

from stages.common.config.param_changes import flatten, short
from stages.common.plumbing.errors import ParamsError, StageError, first_line

MISSING = "-"
NARROWEST = 40  # --width below this leaves no room for a table


@dataclass
class Row:
    label: str  # the Experiment column: workspace, a branch, or an indented experiment name
    params: dict[str, Any] = field(default_factory=dict)  # flattened params.yaml
    metrics: dict[str, Any] = field(default_factory=dict)  # "<file>:<key>" -> value
    problems: list[str] = field(default_factory=list)  # files DVC could not read for the row


@dataclass
class Column:
    label: str
    priority: int  # lower shows first and goes last
    cells: list[str]

    @property
    def width(self) -> int:
        return max(len(self.label), *(len(cell) for cell in self.cells))


# Which columns stay when the width is short: lower priorities show first and go last. A
# sweep's searched params, then the verdict (best model, each model's test accuracy, a
# student's gain over its baseline, the ensemble's accuracy: what a distillation experiment is
# run for outranks the ensemble, which adds least to the models beside it), then the first few
# other changed params, then the other metrics, the architectures and the rest of the params.
SWEPT = 1
TRIAL_NAME = re.compile(r"-t\d{3,}$")  # a sweep trial's experiment (tuning/sweep.py)
# headline metrics: (file pattern, key pattern, column label, priority); {m} is the model's name
HEADLINES = [
    (r"metrics/compare\.json", "best_model", "best", 2),
    (r"metrics/evaluate/(?P<m>[^/]+)\.json", "accuracy", "{m} acc", 3),
    (r"metrics/compare\.json", r"distill\.(?P<m>[^.]+)\.gain_over_baseline", "{m} gain", 4),
    (r"metrics/compare\.json", "ensemble_accuracy", "ensemble", 5),
    (r"metrics/train/(?P<m>[^/]+)\.json", "best_val_loss", "{m} val_loss", 20),
    (r"metrics/evaluate/(?P<m>[^/]+)\.json", "mca", "{m} mCA", 21),
    (r"metrics/train/(?P<m>[^/]+)\.json", "best_val_accuracy", "{m} val_acc", 22),
    (r"metrics/train/(?P<m>[^/]+)\.json", "train_minutes", "{m} min", 40),
]
FIRST_PARAMS = 4  # this many changed params rank 10+, between the verdict and other metrics
ARCHITECTURE = 45  # models.<m>.arch: the `models` column and the accuracies say most of it
LATER_PARAMS = 50
# which changed params matter most to a reader, by section: what people tune comes first, the
# data's location and the download switch (a preset with --data changes both) last
SECTION_RANK = ["train", "models", "data", "evaluate", "tune", "seed", "eda", "validate"]
LAST_PARAMS = ("compare", "data.source", "downloads")


def _row(label: str, entry: dict[str, Any]) -> Row:
    """A row from one revision of `dvc exp show`'s data, with what DVC could not read."""
    data = entry.get("data") or {}
    problems = [entry["error"].get("msg", "")] if isinstance(entry.get("error"), dict) else []
    files = data.get("params") or {}
    for file, content in files.items():
        if isinstance((content or {}).get("error"), dict):
            problems.append(f"{file}: {content['error'].get('msg', '')}")
    params = (files.get("params.yaml") or {}).get("data") or {}
    metrics: dict[str, Any] = {}
    for file, content in (data.get("metrics") or {}).items():
        for key, value in flatten((content or {}).get("data") or {}).items():
            metrics[f"{file}:{key}"] = value
    return Row(label, flatten(params), metrics, problems)


def collect_rows(all_branches: bool = False, num: int = 1) -> list[Row]:
    """The rows `dvc exp show` would list, in its order."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    rows = []
    try:
        with Repo() as repo:
            shown = repo.experiments.show(all_branches=all_branches, num=num)
            baselines = [entry.dumpd() for entry in shown]
    except DvcException as error:  # a damaged experiment ref, a repository DVC cannot open
        raise StageError(f"dvc could not list the experiments: {first_line(error)}") from None
    for baseline in baselines:
        label = baseline.get("name") or _short_rev(baseline["rev"])
        rows.append(_row(label, baseline))
        for experiment in baseline.get("experiments") or []:
            state = (experiment.get("executor") or {}).get("state")
            for revision in experiment.get("revs") or []:
                name = revision.get("name") or experiment.get("name") or _short_rev(revision["rev"])
                failed = revision.get("error") and state in (None, "success")
                marker = f" [{state}]" if state not in (None, "success") else ""
                label = f"  {name}{marker}{' [failed]' if failed else ''}"
                rows.append(
                    _row(label, {**revision, "error": None if failed else revision.get("error")})
                )
    return rows


def cell(value: Any) -> str:
    return MISSING if value is None else short(value)


def _short_rev(rev: str) -> str:
    return rev if rev == "workspace" else rev[:7]


def _names_under(params: dict[str, Any], section: str) -> str:
    names = sorted({key.split(".")[1] for key in params if key.startswith(f"{section}.")})
    return ",".join(names) or MISSING


def swept_keys(rows: list[Row]) -> set[str]:
    """The params a sweep searches (``tune.space.<key>``), when the rows hold a sweep's
    trials (every params.yaml has a search space; outside a sweep its keys are ordinary)."""
    if not any(TRIAL_NAME.search(row.label.strip()) for row in rows):
        return set()
    return {
        key.removeprefix("tune.space.").removesuffix(".type")
        for row in rows
        for key in row.params
        if key.startswith("tune.space.") and key.endswith(".type")
    }


def param_columns(rows: list[Row]) -> list[Column]:
    """The params whose values differ between rows, the most telling first: a sweep's
    searched params, then by section. A section whose entries differ (models added or
    dropped, downloads on or off) is one column of entry names; keys of the entries every row
    has are columns of their own."""
    changed: dict[str, list[str]] = {}
    for section in ("models", "distill", "downloads"):
        cells = [_names_under(row.params, section) for row in rows]
        if len(set(cells)) > 1:
            changed[section] = cells
    for key in dict.fromkeys(key for row in rows for key in row.params):
        section = key.split(".")[0]
        if section == "downloads" and section in changed:
            continue
        if section in ("models", "distill") and not all(key in row.params for row in rows):
            continue  # a model (student) some rows lack: the `models` (`distill`) column says so
        cells = [cell(row.params.get(key)) for row in rows]
        if len(set(cells)) > 1:
            changed[key] = cells
    swept = swept_keys(rows)
    ranked = sorted(changed, key=lambda key: (key not in swept, _interest(key)))
    columns = []
    others = 0
    for rank, key in enumerate(ranked):
        if key in swept:
            priority = SWEPT
        elif key.startswith("models.") and key.endswith(".arch"):
            priority = ARCHITECTURE
        else:
            priority = 10 + others if others < FIRST_PARAMS else LATER_PARAMS + rank
            others += 1
        columns.append(Column(_short_param(key), priority, changed[key]))
    return columns


def _interest(key: str) -> int:
    """Sort key of a changed param: which models run and their architectures first, then
    the sections by rank."""
    if key == "models" or (key.startswith("models.") and key.endswith(".arch")):
        return -1
    last = next((i for i, prefix in enumerate(LAST_PARAMS) if key.startswith(prefix)), None)
    if last is not None:
        return len(SECTION_RANK) + last
    section = key.split(".")[0]
    return SECTION_RANK.index(section) if section in SECTION_RANK else len(SECTION_RANK)


def _short_param(key: str) -> str:
    """train.lr -> lr, models.vit.lr_scale -> vit.lr_scale: the sections people change most
    are implied; others keep their section."""
    for prefix in ("train.", "models."):
        if key.startswith(prefix):
            return key.removeprefix(prefix)
    return key


def metric_columns(rows: list[Row]) -> list[Column]:
    """The headline metrics any row has, a column each (per model where per model)."""
    found: dict[str, tuple[int, str]] = {}  # column title -> (priority, "<file>:<key>")
    for row in rows:
        for name in row.metrics:
            file, _, key = name.partition(":")
            for pattern, wanted, label, priority in HEADLINES:
                match = re.fullmatch(pattern, file)
                key_match = re.fullmatch(wanted, key)
                if match and key_match:
                    names = {**match.groupdict(), **key_match.groupdict()}
                    found.setdefault(label.format(**names), (priority, name))
    ordered = sorted(found.items(), key=lambda item: item[1][0])
    columns = []
    for title, (priority, name) in ordered:
        cells = [cell(row.metrics.get(name)) for row in rows]
        if any(cell != MISSING for cell in cells):
            columns.append(Column(title, priority, cells))
    return columns


def fit(
    columns: list[Column], width: int, keep: str | None = None
) -> tuple[list[Column], list[Column]]:
    """The columns that fit in ``width`` (the first, Experiment, and the one labelled
    ``keep`` always), in their order, and those left out, dropping the least important
    first."""
    shown = list(columns)
    dropped: list[Column] = []
    while _table_width(shown) > width and (candidates := [c for c in shown[1:] if c.label != keep]):
        victim = max(candidates, key=lambda c: (c.priority, shown.index(c)))
        shown.remove(victim)
        dropped.append(victim)
    return shown, dropped


def _table_width(columns: list[Column]) -> int:
    return sum(column.width for column in columns) + 2 * (len(columns) - 1)


def render_text(columns: list[Column]) -> list[str]:
    widths = [column.width for column in columns]
    lines = []
    for index in range(-1, len(columns[0].cells)):
        cells = [c.label if index < 0 else c.cells[index] for c in columns]
        parts = [cells[0].ljust(widths[0])]
        parts += [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
    return lines


def render_markdown(columns: list[Column]) -> list[str]:
    lines = ["| " + " | ".join(c.label for c in columns) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|")
    for index in range(len(columns[0].cells)):
        lines.append("| " + " | ".join(c.cells[index].strip() for c in columns) + " |")
    return lines


def sort_rows(rows: list[Row], columns: list[Column], label: str, descending: bool) -> None:
    """Sort each baseline's experiments by the column ``label`` (the rows stay grouped):
    numbers by value, then words (``auto``, a model's name) alphabetically, empty cells last."""
    column = next((c for c in columns if c.label == label), None)
    if column is None:
        known = ", ".join(c.label for c in columns[1:])
        raise ParamsError(f"--sort: no column '{label}' (columns: {known})")
    order = list(range(len(rows)))
    groups: list[list[int]] = []
    for index in order:
        if rows[index].label.startswith("  ") and groups:
            groups[-1].append(index)
        else:
            groups.append([index])

    numbers: dict[int, float] = {}
    for index, text in enumerate(column.cells):
        with contextlib.suppress(ValueError):
            numbers[index] = float(text)

    def ordered(members: list[int]) -> list[int]:
        by_value = sorted(
            (i for i in members if i in numbers), key=numbers.__getitem__, reverse=descending
        )
        words = sorted(
            (i for i in members if i not in numbers and column.cells[i] != MISSING),
            key=lambda i: column.cells[i],
            reverse=descending,
        )
        return by_value + words + [i for i in members if column.cells[i] == MISSING]

    ranked = [i for group in groups for i in [group[0], *ordered(group[1:])]]
    for c in columns:
        c.cells = [c.cells[i] for i in ranked]


def table(rows: list[Row]) -> list[Column]:
    experiment = Column("Experiment", 0, [row.label for row in rows])
    return [experiment, *param_columns(rows), *metric_columns(rows)]


def dropped_note(columns: list[Column], dropped: list[Column], width: int) -> str:
    """Which columns the width left out, in table order, wrapped to that width too."""
    names = ", ".join(c.label for c in sorted(dropped, key=columns.index))
    note = f"(not shown for the width of {width}: {names}; --width or --csv for all)"
    return textwrap.fill(note, width, break_long_words=False, break_on_hyphens=False)
