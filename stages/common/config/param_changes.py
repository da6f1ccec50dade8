"""The params.yaml a run.sh run will have, and where each difference from the committed file
comes from.

The rule: a run starts from params.yaml as committed (git's HEAD). After `dvc exp run`, DVC
leaves the experiment's params in the workspace; a run on top of them would silently inherit
them, so that "the same recipe with one change" differed in seven params. The preset, --data,
the -S overrides and EPOCHS apply on top of the committed file, in that order; the
workspace's own uncommitted changes (an experiment DVC applied, a hand edit) count only when
the user asks (--from-workspace). Without a committed params.yaml (not a git clone, nothing
committed yet) the workspace's file is the start.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stages.common.config.overrides import Overridden, scratch_params
from stages.common.config.params import parse_params
from stages.common.config.presets import REPLACED_WHOLE, Preset, overrides, reading
from stages.common.plumbing.files import write_text
from stages.common.plumbing.stage_params import PARAMS_FILE, read_params_file

WORKSPACE = "workspace"
LAST_RUN = Path(".dvc/tmp/run.sh.params.yaml")  # params.yaml as run.sh's last run wrote it
SET_ASIDE = Path(".dvc/tmp")  # where the workspace's own changes go: params.yaml.<date-time>
LONGEST_VALUE = 24  # characters of a value shown (longer ones are cut from the left)


@dataclass(frozen=True)
class Layer:
    """One source of overrides: its name as the list of changes shows it, and its overrides
    given params.yaml as the layers below left it."""

    source: str
    overrides: Callable[[dict[str, Any]], list[str]]


def preset_layer(preset: Preset) -> Layer:
    return Layer(f"preset {preset.name}", lambda raw: overrides(preset.sections, raw))


def data_layer(source: str) -> Layer:
    return Layer("--data", lambda raw: overrides(reading({}, source), raw))


def set_layer(given: list[str]) -> Layer:
    return Layer("-S", lambda raw: list(given))


def epochs_layer(epochs: int) -> Layer:
    return Layer("EPOCHS", lambda raw: [f"train.epochs={epochs}"])


@dataclass(frozen=True)
class Change:
    key: str  # a flat key, or models.<name> / downloads.<name> for an entry added or removed
    before: str
    after: str
    source: str


@dataclass(frozen=True)
class RunParams:
    applied: Overridden  # params.yaml as DVC will write it for the run
    overrides: list[str]  # what makes it from the start (for `dvc exp run -S`), in order
    start_text: str  # the file the run starts from: committed, or the workspace's
    changes: list[Change]  # against the committed params.yaml
    sources: list[str]  # the layers' names, in the order they apply
    left_out: list[str]  # keys the workspace changed that the run starts without


def committed_text(path: Path = PARAMS_FILE) -> str | None:
    """``path`` as committed at HEAD, or None (not a git clone, nothing committed, untracked)."""
    try:
        shown = subprocess.run(
            ["git", "show", f"HEAD:./{path}"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return shown.stdout if shown.returncode == 0 else None


def resolve(layers: list[Layer], from_workspace: bool, path: Path = PARAMS_FILE) -> RunParams:
    """The run's params: the committed file (or the workspace's) with ``layers`` applied in
    order; every difference from the committed file named with the layer that made it."""
    workspace = read_params_file(path)
    workspace_text = path.read_text()
    committed = committed_text(path)
    if committed is None:
        committed = workspace_text
    with scratch_params(committed) as scratch:
        committed_raw = scratch.raw
    workspace_changes = changed_keys(flatten(committed_raw), flatten(workspace))
    start_text = workspace_text if from_workspace else committed
    source_of = {key: WORKSPACE for key in workspace_changes} if from_workspace else {}
    applied: list[str] = []
    with scratch_params(start_text) as scratch:
        raw = scratch.raw
        for layer in layers:
            for override in layer.overrides(raw):
                scratch.apply(override)
                applied.append(override)
            now = scratch.raw
            source_of.update(dict.fromkeys(changed_keys(flatten(raw), flatten(now)), layer.source))
            raw = now
        text = scratch.text
    final = Overridden(text, raw, parse_params(raw, str(path)))
    before = parse_params(committed_raw, f"{path} (committed)")
    changes = differences(
        flatten(before.model_dump(by_alias=True)),
        flatten(final.params.model_dump(by_alias=True)),
        source_of,
    )
    left_out = [] if from_workspace else sorted(workspace_changes)
    sources = ([WORKSPACE] if from_workspace else []) + [layer.source for layer in layers]
    return RunParams(final, applied, start_text, changes, sources, left_out)


def differences(
    before: dict[str, Any], after: dict[str, Any], source_of: dict[str, str]
) -> list[Change]:
    """The changes from ``before`` to ``after`` (flat keys); a model or download entry only
    one of them has is one change, not one per key."""
    changes: list[Change] = []
    whole: set[str] = set()
    for key in changed_keys(before, after):
        if key in REPLACED_WHOLE:
            continue  # the section emptied or filled: its entries say how
        entry = _entry(key)
        if entry and (entry not in _entries(before) or entry not in _entries(after)):
            if entry not in whole:
                whole.add(entry)
                added = entry in _entries(after)
                source = _source(entry, source_of)
                changes.append(
                    Change(
                        entry, "-" if added else "present", "added" if added else "removed", source
                    )
                )
            continue
        changes.append(
            Change(
                key,
                short(before.get(key, "-")),
                short(after.get(key, "-")),
                _source(key, source_of),
            )
        )
    return changes


def _entry(key: str) -> str | None:
    """models.resnet for models.resnet.arch (an entry of a section replaced whole)."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] in REPLACED_WHOLE and len(parts) > 1 else None


def _entries(flat: dict[str, Any]) -> set[str]:
    return {entry for key in flat if (entry := _entry(key))}


def _source(key: str, source_of: dict[str, str]) -> str:
    """The layer that changed ``key`` (or, for a whole entry, any key under it) last."""
    if key in source_of:
        return source_of[key]
    under = [source for changed, source in source_of.items() if changed.startswith(f"{key}.")]
    return under[-1] if under else WORKSPACE


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The flat keys whose values differ, or that only one side has, in ``after``'s order."""
    keys = list(dict.fromkeys([*after, *before]))
    missing = object()
    return [key for key in keys if before.get(key, missing) != after.get(key, missing)]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}; lists and empty mappings stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def short(value: Any) -> str:
    """A value as a table cell: lowercase booleans, 4 significant digits, long text cut from
    the left (a path's end tells most)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ",".join(short(v) for v in value) + "]"
    text = str(value)
    return text if len(text) <= LONGEST_VALUE else "..." + text[-(LONGEST_VALUE - 3) :]


def describe_changes(run: RunParams) -> list[str]:
    """The lines run.sh prints before it runs: every param that differs from the committed
    params.yaml, from where, and the workspace changes the run leaves out."""
    lines = []
    if run.changes:
        counts = {source: 0 for source in run.sources}
        for change in run.changes:
            counts[change.source] = counts.get(change.source, 0) + 1
        origins = ", ".join(f"{n} from {source}" for source, n in counts.items() if n)
        lines.append(f"params that differ from the committed params.yaml ({origins}):")
        width = max(len(change.key) for change in run.changes)
        values = [f"{change.before} -> {change.after}" for change in run.changes]
        value_width = max(len(value) for value in values)
        for change, value in zip(run.changes, values):
            lines.append(f"  {change.key:<{width}}  {value:<{value_width}}  {change.source}")
    else:
        lines.append("params: as committed")
    if run.left_out:
        named = ", ".join(run.left_out[:6]) + (
            f" and {len(run.left_out) - 6} more" if len(run.left_out) > 6 else ""
        )
        lines.append(
            f"note: the workspace's params.yaml differs from the committed one in {named}; "
            "this run starts from the committed file without them (--from-workspace keeps them)"
        )
    return lines


def start_run(run: RunParams, path: Path = PARAMS_FILE) -> Path | None:
    """Put the file the run starts from into ``path``, just before DVC starts. The workspace's
    own changes are saved first to a dated file beside DVC's, unless they are the params run.sh's
    last run left (DVC keeps those as its experiment); returns the saved file, if any."""
    workspace_text = path.read_text()
    saved = None
    if workspace_text != run.start_text:
        if not _left_by_last_run(workspace_text):
            saved = SET_ASIDE / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}"
            write_text(saved, workspace_text)
        write_text(path, run.start_text)
    write_text(LAST_RUN, run.applied.text)
    return saved


def _left_by_last_run(text: str) -> bool:
    if not LAST_RUN.is_file():
        return False
    try:
        return yaml.safe_load(text) == yaml.safe_load(LAST_RUN.read_text())
    except yaml.YAMLError:
        return False
