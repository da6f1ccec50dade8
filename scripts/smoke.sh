#!/usr/bin/env bash
# The whole pipeline in minutes on a CPU (presets/smoke.yaml: timm's tiny test models at 32 px,
# random weights, a subset of the data), as a DVC experiment on a local copy of the data.
#   bash scripts/smoke.sh ../shared/datasets/cifar10-jpeg.tar.gz [images per class] [epochs]
set -euo pipefail
cd "$(dirname "$0")/.."
source="${1:?usage: scripts/smoke.sh DATA_SOURCE [PER_CLASS] [EPOCHS]}"
per_class="${2:-200}"
epochs="${3:-3}"
bash run.sh "$epochs" all train --preset smoke --data "$(realpath "$source")" -S "data.subset=$per_class"
cat reports/comparison.md
