"""preset <name>: print the `-S` overrides that turn params.yaml into presets/<name>.yaml.

    python -m stages.preset cpu [--data PATH]     # what run.sh --preset cpu [--data PATH] uses

A preset is a partial params.yaml. Its `models` and `downloads` replace those sections whole
(models missing from the preset are dropped); every other key it names is set, the rest of
params.yaml stays. The overrides use DVC's (Hydra's) `-S` grammar, so the preset runs as an
ordinary experiment: `dvc exp show` lists exactly what it changed.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from stages.common.cli import run_command
from stages.common.errors import ParamsError
from stages.common.params import PARAMS_FILE, read_params_file
from stages.common.yamlfile import load_yaml

PRESETS_DIR = Path("presets")
REPLACED_WHOLE = ("models", "downloads")


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


def overrides(preset: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The -S overrides that make ``params`` what ``preset`` says."""
    result: list[str] = []
    for section in REPLACED_WHOLE:
        if section not in preset:
            continue
        wanted = preset[section] or {}
        for name in params.get(section) or {}:
            result.append(f"~{section}.{name}")
        for name, value in wanted.items():
            result.append(f"+{section}.{name}={hydra_value(value)}")
    rest = {key: value for key, value in preset.items() if key not in REPLACED_WHOLE}
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


def reading(preset: dict[str, Any], source: str) -> dict[str, Any]:
    """``preset`` made to read the data at ``source`` instead of downloading it."""
    return {**preset, "downloads": {}, "data": {**preset.get("data", {}), "source": source}}


def load_preset(name: str) -> dict[str, Any]:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise ParamsError(f"preset '{name}': no {path} (presets: {', '.join(known)})")
    preset = load_yaml(path) or {}
    if not isinstance(preset, dict):
        raise ParamsError(f"{path}: expected a mapping of params.yaml sections")
    return preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="a file presets/<name>.yaml")
    parser.add_argument(
        "--data", help="read this data source instead of downloading (drops every download)"
    )
    args = parser.parse_args()
    preset = load_preset(args.name) if args.name else {}
    if args.data:
        preset = reading(preset, args.data)
    for override in overrides(preset, read_params_file(PARAMS_FILE)):
        print(override)


if __name__ == "__main__":
    run_command(main)
