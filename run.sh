#!/usr/bin/env bash
# Set up and run the pipeline, or a hyperparameter sweep.
#
#   bash run.sh [EPOCHS] [MODEL|all] [train|sweep] [--preset NAME] [--data PATH] [-S key=value ...]
#
#   bash run.sh                      # everything, as params.yaml says (dvc repro)
#   bash run.sh 5                    # an experiment with train.epochs=5 (see `dvc exp show`)
#   bash run.sh 5 vit                # only the ViT branch (train@vit, evaluate@vit), 5 epochs
#   bash run.sh 3 resnet sweep       # an Optuna sweep of resnet, 3 epochs per trial
#   bash run.sh --preset cpu         # a preset of presets/ as an experiment (cpu: 90.5% in ~29 min, 2 cores)
#   bash run.sh --data /data/cifar10-jpeg.tar.gz   # read a local copy instead of downloading
#
# Everything is checked before DVC starts (params.yaml, the preset, the -S overrides, the
# arguments), so a mistake costs nothing; a run that fails leaves params.yaml as it was.
set -euo pipefail
cd "$(dirname "$0")"

fail() { echo "error: $*" >&2; exit 2; }
positional=() overrides=() preset="" data=""
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) [ $# -ge 2 ] || fail "--preset needs a name (see presets/)"; preset="$2"; shift 2 ;;
    --data) [ $# -ge 2 ] || fail "--data needs a path"; data="$2"; shift 2 ;;
    -S|--set-param) [ $# -ge 2 ] || fail "$1 needs key=value"; overrides+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -[0-9]*) positional+=("$1"); shift ;;
    -*) fail "unknown option '$1' (see bash run.sh --help)" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -le 3 ] || fail "too many arguments: ${positional[*]} (see bash run.sh --help)"
epochs="${positional[0]:-}"
model="${positional[1]:-all}"
mode="${positional[2]:-train}"
[ -z "$epochs" ] || [[ "$epochs" =~ ^[1-9][0-9]*$ ]] || fail "EPOCHS must be a whole number >= 1, got '$epochs'"
case "$mode" in train|sweep) ;; *) fail "mode must be 'train' or 'sweep', got '$mode'" ;; esac
[ "$mode" = train ] || [ "$model" != all ] || fail "a sweep tunes one model: bash run.sh EPOCHS MODEL sweep"
[ -d .git ] || fail "run.sh needs the git clone of this repository (DVC tracks it)"

bash scripts/setup.sh
source "${CIFAR10_VENV:-.venv}/bin/activate"
export DVC_NO_ANALYTICS=1

if [ -n "$preset$data" ]; then
  preset_args=()
  [ -n "$preset" ] && preset_args+=("$preset")
  [ -n "$data" ] && preset_args+=(--data "$data")
  preset_overrides="$(python -m stages.preset "${preset_args[@]}")" || exit $?
  mapfile -t preset_overrides <<< "$preset_overrides"
  overrides=("${preset_overrides[@]}" "${overrides[@]}")
fi
[ -n "$epochs" ] && [ "$mode" = train ] && overrides+=("train.epochs=$epochs")
set_args=()
for override in "${overrides[@]}"; do set_args+=(-S "$override"); done

# Check params.yaml as DVC is about to run it: the overrides applied, every model buildable.
model_args=()
[ "$model" = all ] || model_args=(--model "$model")
python -m stages.check_params "${set_args[@]}" "${model_args[@]}"

if [ "$mode" = sweep ]; then
  sweep_args=("$model")
  [ -n "$epochs" ] && sweep_args+=(--epochs "$epochs")
  exec python -m stages.sweep "${sweep_args[@]}" "${set_args[@]}"
fi

target=()
[ "$model" = all ] || target=("evaluate@$model")
if [ ${#set_args[@]} -eq 0 ]; then
  dvc repro "${target[@]}"
  cat reports/comparison.md 2>/dev/null || true
  exit 0
fi
# `dvc exp run -S` writes the overrides into params.yaml first; put it back if the run fails.
saved="$(mktemp)"
cp params.yaml "$saved"
restore_params() {
  local status=$?
  if [ "$status" -ne 0 ]; then cp "$saved" params.yaml; echo "params.yaml restored" >&2; fi
  rm -f "$saved"
}
trap restore_params EXIT
name=()
[ -n "$preset" ] && name=(-n "$preset-$(date +%Y%m%d-%H%M%S)")
dvc exp run "${name[@]}" "${set_args[@]}" "${target[@]}"
dvc exp show --only-changed --drop 'Created' --no-pager 2>/dev/null || dvc exp show --only-changed
