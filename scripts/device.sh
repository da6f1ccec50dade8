#!/usr/bin/env bash
# Run one of the project's commands on the lent GPU machine, from the copy of the working tree
# its `run` tool starts in (no network; torch, torchvision, timm and onnx preinstalled; no dvc,
# dvclive or pydantic; no .git). Here, first: `bash ../shared/device/pack.sh` (-> .devwork/,
# carried along). There:
#
#   bash scripts/device.sh bash run.sh 2 --data .devwork/data/cifar10-jpeg.tar.gz -S ...
#
# It installs .devwork/whl/ into the machine's Python, gives run.sh an environment it takes as
# set up (a venv over the system's packages, its requirements stamp written: the pinned torch
# cannot be fetched there), makes the copy a git repository (DVC's experiments need one;
# dulwich, which DVC brings, when there is no git), samples the GPU's memory and utilisation
# twice a second while the command runs, and leaves in $OUT: command.log, gpu.csv,
# gpu-samples.csv and the run's metrics/, reports/, dvc.lock. Exit code: the command's.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:?set OUT to the folder that comes back}"
mkdir -p "$out"
if [ -d .devwork/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile .devwork/whl/*.whl
fi
if [ -z "${CIFAR10_VENV:-}" ]; then
  export CIFAR10_VENV=/tmp/cifar10-device-venv
  python3 -m venv --system-site-packages --without-pip "$CIFAR10_VENV"
  cat requirements.txt requirements-remote.txt requirements-dev.txt | sha256sum \
    > "$CIFAR10_VENV/.cifar10-requirements"  # what scripts/setup.sh compares
fi
if [ ! -e .git ]; then
  if command -v git > /dev/null; then
    git init -q -b main
    git add -A
    git -c user.name=device -c user.email=device@localhost commit -qm "the device's copy"
  else
    python3 - <<'EOF'
from dulwich import porcelain

repo = porcelain.init(".")
porcelain.add(repo)
porcelain.commit(repo, b"the device's copy", author=b"device <device@localhost>",
                 committer=b"device <device@localhost>")
EOF
  fi
fi
sampler=""
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv"
  nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader -lms 500 \
    > "$out/gpu-samples.csv" &
  sampler=$!
fi
status=0
"$@" > "$out/command.log" 2>&1 || status=$?
[ -z "$sampler" ] || kill "$sampler" 2> /dev/null || true
for path in metrics reports dvc.lock; do
  [ ! -e "$path" ] || cp -r "$path" "$out/"
done
tail -n 40 "$out/command.log"
exit "$status"
