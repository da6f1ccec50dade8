#!/usr/bin/env bash
# Create the virtual environment and install the pinned requirements. Quick when they are
# installed already. $CIFAR10_VENV picks the environment (default .venv; the container image
# sets its own, so a mounted clone's files are left alone).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CIFAR10_VENV:-.venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# pip is skipped when these requirement files were installed into this venv already
stamp="$venv/.cifar10-requirements"
wanted="$(cat requirements.txt requirements-remote.txt requirements-dev.txt | sha256sum)"
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && exit 0
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt; then
  echo "error: installing requirements-dev.txt into $venv failed" >&2
  exit 1
fi
echo "$wanted" > "$stamp"
