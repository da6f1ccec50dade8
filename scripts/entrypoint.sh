#!/usr/bin/env bash
# The container's entrypoint: `podman run IMAGE [EPOCHS] [MODEL] [MODE] [options]` runs run.sh
# with those arguments in the clone mounted at /work (where the outputs then stay), else in the
# image's own copy. A first argument naming a program (dvc, python, bash, ...) runs that instead;
# `serve [options]` starts the prediction service on port 8000 of every interface.
# Any uid works (--user, --userns=keep-id): HOME and git's settings go to a folder of its own.
set -euo pipefail
image_copy="$(cd "$(dirname "$0")/.." && pwd)"
workdir="${CIFAR10_WORKDIR:-/work}"
if [ ! -f "$workdir/run.sh" ]; then
  echo "no clone mounted at $workdir; running the image's own copy ($image_copy)" >&2
  workdir="$image_copy"
fi
cd "$workdir"

# A uid the image does not know gets HOME=/ or the working directory from the runtime: git's
# global settings belong in neither (unwritable, or written into the user's clone).
if [ -z "${HOME:-}" ] || [ "$HOME" = / ] || [ "$HOME" = "$workdir" ] || [ ! -w "$HOME" ]; then
  HOME="${TMPDIR:-/tmp}/home-$(id -u)"
  export HOME
  mkdir -p "$HOME"
fi
# The mounted clone belongs to the host's user, not to the image's: let git (and DVC) read it.
git config --global --get-all safe.directory | grep -qxF "$workdir" \
  || git config --global --add safe.directory "$workdir"
# An experiment commits (dvc exp run); with no identity in the clone or the image, use one that
# says where the commit came from (GIT_AUTHOR_NAME/GIT_AUTHOR_EMAIL set your own).
if ! git config user.email >/dev/null; then
  git config --global user.name "${GIT_AUTHOR_NAME:-cifar10-dvc container}"
  git config --global user.email "${GIT_AUTHOR_EMAIL:-cifar10-dvc@container.invalid}"
fi

if [ "${1:-}" = serve ]; then
  shift
  exec python -m stages.serve --host 0.0.0.0 "$@"
fi
if [ $# -gt 0 ] && command -v "$1" >/dev/null 2>&1 && [[ "$1" != -* ]] && ! [[ "$1" =~ ^[0-9]+$ ]]; then
  exec "$@"
fi
exec bash run.sh "$@"
