#!/usr/bin/env bash
# Set up and run the pipeline.
#   bash run.sh                 # everything: prepare -> validate -> eda -> train -> evaluate -> compare
#   bash run.sh 5               # the same as an experiment with train.epochs=5 (see `dvc exp show`)
#   bash run.sh 5 vit           # only the ViT branch (train@vit, evaluate@vit), 5 epochs
set -euo pipefail
cd "$(dirname "$0")"
epochs="${1:-}"
model="${2:-}"

bash scripts/setup.sh
source .venv/bin/activate
export DVC_NO_ANALYTICS=1
[ -d .git ] || { echo "error: run.sh needs the git clone of this repository (DVC tracks it)" >&2; exit 2; }

# Check params.yaml (and the architectures and weight files it names) before DVC touches outputs.
python -m stages.check_params

target=()
[ -n "$model" ] && target=("evaluate@$model")
if [ -n "$epochs" ]; then
  dvc exp run -S "train.epochs=$epochs" "${target[@]}"
  dvc exp show --only-changed
else
  dvc repro "${target[@]}"
  cat reports/comparison.md
fi
