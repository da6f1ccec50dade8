#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CIFAR10_VENV:-.venv}"
[ -x "$venv/bin/pytest" ] || bash scripts/setup.sh
export DVC_NO_ANALYTICS=1
"$venv/bin/python" -m pytest "$@"
