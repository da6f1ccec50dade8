#!/usr/bin/env bash
# Create .venv and install the pinned requirements. Quick when they are installed already;
# inside the container image (VIRTUAL_ENV set, requirements baked in) it links that venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${VIRTUAL_ENV:-}" ] && [ ! -e .venv ]; then
  ln -s "$VIRTUAL_ENV" .venv
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt; then
  echo "error: installing requirements-dev.txt into .venv failed" >&2
  exit 1
fi
