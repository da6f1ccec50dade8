#!/usr/bin/env bash
# The quality gates of the `lint` CI job: style, formatting, types, security, the Containerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LINT_VENV:-.lint-venv}"   # its own venv: the linters need none of the project's packages
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements-lint.txt
source "$venv/bin/activate"
ruff check .
ruff format --check .
mypy stages
bandit --quiet --configfile pyproject.toml --recursive stages
hadolint --failure-threshold warning Containerfile
shellcheck --severity=warning run.sh scripts/*.sh .ci/run
