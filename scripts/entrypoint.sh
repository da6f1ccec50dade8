#!/usr/bin/env bash
# The container's entrypoint: `podman run IMAGE [EPOCHS] [MODEL] [MODE] [options]` runs run.sh
# with those arguments in the clone mounted at /work (where the outputs then stay), else in the
# image's own copy. A first argument naming a program (dvc, python, bash, ...) runs that instead.
set -euo pipefail
image_copy="$(cd "$(dirname "$0")/.." && pwd)"
workdir="${CIFAR10_WORKDIR:-/work}"
if [ ! -f "$workdir/run.sh" ]; then
  echo "no clone mounted at $workdir; running the image's own copy ($image_copy)" >&2
  workdir="$image_copy"
fi
cd "$workdir"
# a mounted clone belongs to the host's user, not to the image's: let git (and DVC) read it
git config --global --get-all safe.directory | grep -qxF "$workdir" \
  || git config --global --add safe.directory "$workdir"
if [ $# -gt 0 ] && command -v "$1" >/dev/null 2>&1 && [[ "$1" != -* ]] && ! [[ "$1" =~ ^[0-9]+$ ]]; then
  exec "$@"
fi
exec bash run.sh "$@"
