#!/usr/bin/env bash
# The whole pipeline in minutes on a CPU: timm's tiny test models at 32 px, random weights,
# a subset of the data. Runs as a DVC experiment, so params.yaml's defaults stay as they are
# in git (`dvc exp show` lists it; `dvc exp apply smoke` would bring its outputs back).
#   bash scripts/smoke.sh ../shared/datasets/cifar10-jpeg.tar.gz [images per class] [epochs]
set -euo pipefail
cd "$(dirname "$0")/.."
source="${1:?usage: scripts/smoke.sh DATA_SOURCE [PER_CLASS] [EPOCHS]}"
per_class="${2:-200}"
epochs="${3:-3}"
source .venv/bin/activate
export DVC_NO_ANALYTICS=1
set_model() {  # name arch
  echo "-S models.$1.arch=$2 -S models.$1.pretrained=false -S models.$1.img_size=32"
}
# shellcheck disable=SC2046
dvc exp run -n "smoke-$(date +%Y%m%d-%H%M%S)" \
  -S "data.source=$source" -S "data.subset=$per_class" \
  -S "train.epochs=$epochs" -S train.batch_size=64 -S train.workers=2 -S models.vit.lr=0.001 \
  $(set_model resnet test_resnet) $(set_model efficientnet test_efficientnet) \
  $(set_model vit test_vit)
cat reports/comparison.md
