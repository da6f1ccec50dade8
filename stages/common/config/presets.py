"""Presets: partial params.yaml files under presets/, turned into `-S` overrides.

A preset's `models`, `distill` and `downloads` replace those sections whole (models missing
from the preset are dropped); every other key it names is set, the rest of params.yaml stays. The
overrides use DVC's (Hydra's) `-S` grammar, so a preset runs as an ordinary experiment:
`dvc exp show` lists exactly what it changed. A preset's own `runs_on` (not a params key) names
the devices it is made for: run.sh never stops it there for its estimated time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.strict_yaml import load_yaml

PRESETS_DIR = Path("presets")
REPLACED_WHOLE = ("models", "distill", "downloads")
Device = Literal["cpu", "cuda"]
DEVICES: tuple[Device, ...] = ("cpu", "cuda")


@dataclass(frozen=True)
class Preset:
    name: str
    sections: dict[str, Any]  # the partial params.yaml
    runs_on: tuple[Device, ...] = field(default=())  # devices it is made (and documented) for


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (strings quoted, mappings in braces)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, str):
        return hydra_string(value)
    return json.dumps(value)  # numbers, true/false, null


def hydra_string(text: str) -> str:
    """``text`` as a double-quoted Hydra string. Hydra reads any character between the quotes
    (JSON's \\u escapes it would not decode: a path with ü became \\u00fc); a backslash
    is special only before a quote or at the end, and ${ starts an interpolation."""
    escaped = re.sub(r'(\\+)(?="|$)', lambda run: run.group(1) * 2, text)
    return '"' + escaped.replace('"', '\\"').replace("${", "\\${") + '"'


def overrides(partial: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The -S overrides that make ``params`` what the partial params.yaml ``partial`` says."""
    result: list[str] = []
    for section in REPLACED_WHOLE:
        if section not in partial:
            continue
        wanted = partial[section] or {}
        for name in params.get(section) or {}:
            result.append(f"~{section}.{name}")
        for name, value in wanted.items():
            result.append(f"+{section}.{name}={hydra_value(value)}")
    rest = {key: value for key, value in partial.items() if key not in REPLACED_WHOLE}
    result += [f"{key}={hydra_value(value)}" for key, value in _leaves(rest, params, "")]
    return result


def _leaves(tree: dict[str, Any], params: Any, prefix: str) -> list[tuple[str, Any]]:
    leaves = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if not isinstance(params, dict) or key not in params:
            raise ParamsError(f"preset: '{path}' is not a key of params.yaml")
        if isinstance(value, dict) and isinstance(params[key], dict):
            leaves += _leaves(value, params[key], f"{path}.")
        else:
            leaves.append((path, value))
    return leaves


def reading(partial: dict[str, Any], source: str) -> dict[str, Any]:
    """``partial`` made to read the data at ``source`` instead of downloading it."""
    return {**partial, "downloads": {}, "data": {**partial.get("data", {}), "source": source}}


def load_preset(name: str, folder: Path = PRESETS_DIR, seen: tuple[str, ...] = ()) -> Preset:
    """presets/<name>.yaml; with ``extends: <other>``, the other preset with this one's
    sections merged in (entry by entry: a model added to the other's models, a train key
    changed), and this one's ``runs_on``."""
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ParamsError(f"preset '{name}': no {path} (presets: {', '.join(known)})")
    sections = load_yaml(path) or {}
    if not isinstance(sections, dict):
        raise ParamsError(f"{path}: expected a mapping of params.yaml sections")
    runs_on = sections.pop("runs_on", [])
    if not isinstance(runs_on, list) or not set(runs_on) <= set(DEVICES):
        raise ParamsError(f"{path}: runs_on: expected a list of {', '.join(DEVICES)}")
    base = sections.pop("extends", None)
    if base is not None:
        if not isinstance(base, str) or base in (*seen, name):
            raise ParamsError(f"{path}: extends: expected the name of another preset, got {base!r}")
        sections = _merged(load_preset(base, folder, (*seen, name)).sections, sections)
    return Preset(name, sections, tuple(runs_on))


def _merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update``'s keys over ``base``'s, mappings merged key by key."""
    result = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merged(result[key], value)
        else:
            result[key] = value
    return result
