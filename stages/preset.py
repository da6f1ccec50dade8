"""preset <name>: print the `-S` overrides that turn params.yaml into presets/<name>.yaml.

    python -m stages.preset cpu [--data PATH]     # the overrides of run.sh --preset cpu --data PATH

What a preset replaces and what it keeps: stages/common/config/presets.py.
"""

from __future__ import annotations

import argparse

from stages.common.config.presets import load_preset, overrides, reading
from stages.common.plumbing.command import run_command
from stages.common.plumbing.stage_params import PARAMS_FILE, read_params_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="a file presets/<name>.yaml")
    parser.add_argument(
        "--data", help="read this data source instead of downloading (drops every download)"
    )
    args = parser.parse_args()
    partial = load_preset(args.name).sections if args.name else {}
    if args.data:
        partial = reading(partial, args.data)
    for override in overrides(partial, read_params_file(PARAMS_FILE)):
        print(override)


if __name__ == "__main__":
    run_command(main)
