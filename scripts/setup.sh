#!/usr/bin/env bash
# Create .venv and install the pinned requirements (idempotent: a second run is quick).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements-dev.txt
