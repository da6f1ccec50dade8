#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CIFAR10_VENV:-.venv}"
bash scripts/setup.sh   # a no-op when the requirements are installed already
export DVC_NO_ANALYTICS=1
# Two workers, each running whole test files (module fixtures stay on one worker): much of the
# suite's time is single-threaded (Python imports, dvc and git), so two files at a time use a
# 2-core machine fully. CIFAR10_TEST_WORKERS (or -n in the arguments) picks another count; 0 = none.
# --durations: the 15 slowest tests of every run, where the suite's time goes.
"$venv/bin/python" -m pytest -n "${CIFAR10_TEST_WORKERS:-2}" --dist loadfile --durations=15 "$@"
