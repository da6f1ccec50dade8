#!/usr/bin/env bash
# Set up and run the pipeline, or a hyperparameter sweep; say first what it will cost.
#
#   bash run.sh [EPOCHS] [MODEL|all] [train|sweep] [--preset NAME] [--data PATH] [-S key=value ...]
#               [--from-workspace] [--dry-run] [--allow-slow]
#   bash run.sh show [--md|--csv|--width N|--sort COLUMN]   # the experiments as one table
#   bash run.sh serve [--model FILE] [--port N]             # the released model over HTTP
#   bash run.sh predict MODEL IMAGE...                      # classify your own images
#
#   bash run.sh                      # everything, as the committed params.yaml says (dvc repro)
#   bash run.sh 5                    # an experiment with train.epochs=5 (then: bash run.sh show)
#   bash run.sh 5 vit                # only the ViT branch (train@vit, evaluate@vit), 5 epochs
#   bash run.sh 3 resnet sweep       # an Optuna sweep of resnet, 3 epochs per trial
#   bash run.sh --preset cpu         # a preset of presets/ as an experiment (cpu: 90.5% in ~29 min, 2 cores)
#   bash run.sh --data /data/cifar10-jpeg.tar.gz   # read a local copy instead of downloading
#   bash run.sh --dry-run ...        # the checks, the plan and the cost estimate; runs nothing
#
# A run starts from the committed params.yaml; the preset, --data, -S and EPOCHS apply on top
# (--from-workspace: on top of the workspace's params.yaml instead). Before DVC starts: every
# param that differs from the committed file and where it came from, the checks, the plan
# (which stages run, which are cached) and each model's training time on this machine (real
# steps timed). Without a GPU, a run estimated over an hour stops there unless --allow-slow
# (or CIFAR10_ALLOW_SLOW=1) or its preset is made for a CPU. A mistake costs nothing; a run
# that fails leaves params.yaml as it was.
set -euo pipefail
caller="$PWD"
cd "$(dirname "$0")"

fail() { echo "error: $*" >&2; exit 2; }
invocation="bash run.sh $*"
positional=() overrides=() preset="" data="" dry_run="" allow_slow=() from_workspace=()
case "${1:-}" in
  show|serve|predict)  # the commands of the environment run.sh sets up, without activating it
    command="$1"
    shift
    bash scripts/setup.sh
    source "${CIFAR10_VENV:-.venv}/bin/activate"
    exec python -m "stages.$command" "$@"
    ;;
esac
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) [ $# -ge 2 ] || fail "--preset needs a name (see presets/)"; preset="$2"; shift 2 ;;
    --data) [ $# -ge 2 ] || fail "--data needs a path"; data="$2"; shift 2 ;;
    -S|--set-param) [ $# -ge 2 ] || fail "$1 needs key=value"; overrides+=("$2"); shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --allow-slow) allow_slow=(--allow-slow); shift ;;
    --from-workspace) from_workspace=(--from-workspace); shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
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

# One run per clone: a second `dvc exp run` in the same workspace breaks the first one (DVC
# ends it with "'NoneType' object is not subscriptable" and loses its experiment). Sweeps may
# share a clone (their trials run in DVC's temporary copies); a run in the workspace may not
# share it with anything. The lock lasts as long as run.sh and every process it starts.
lock=.dvc/tmp/run.sh.lock
if ! mkdir -p .dvc/tmp 2>/dev/null || ! touch "$lock" 2>/dev/null; then
  fail "this clone is not writable ($PWD/.dvc/tmp): run.sh keeps its lock and DVC its state there; run it from a writable clone"
fi
exec 9>>"$lock"
if [ "$mode" = sweep ]; then lock_mode=-s; else lock_mode=-x; fi
if ! flock -n "$lock_mode" 9; then
  fail "another run.sh is running in this clone ($(head -n 1 "$lock" 2>/dev/null || echo 'see .dvc/tmp/run.sh.lock')); wait for it to end, or stop it"
fi
echo "pid $$ since $(date +%H:%M:%S): $invocation" > "$lock"

bash scripts/setup.sh
source "${CIFAR10_VENV:-.venv}/bin/activate"
export DVC_NO_ANALYTICS=1

# --data is a path from where you ran run.sh: inside the repository it is kept relative to the
# repository (so that params.yaml stays valid in every clone), outside it becomes absolute
if [ -n "$data" ] && [[ "$data" != /* ]] && [ -e "$caller/$data" ]; then
  data="$(realpath --no-symlinks --relative-base="$PWD" "$caller/$data")"
fi

# The run's params (the committed params.yaml, then the preset, --data, -S and EPOCHS), the
# checks, the plan and the cost, before DVC starts: stages/preflight.py.
preflight_args=("${allow_slow[@]}" "${from_workspace[@]}")
[ -n "$preset" ] && preflight_args+=(--preset "$preset")
[ -n "$data" ] && preflight_args+=(--data "$data")
for override in "${overrides[@]}"; do preflight_args+=(-S "$override"); done
[ -n "$epochs" ] && preflight_args+=(--epochs "$epochs")
[ "$model" = all ] || preflight_args+=(--model "$model")
[ "$mode" = sweep ] && preflight_args+=(--sweep)
if [ -n "$dry_run" ]; then
  python -m stages.preflight "${preflight_args[@]}" --dry-run
  echo "dry run: nothing was run or changed"
  exit 0
fi

# preflight puts the params.yaml the run starts from in place, and `dvc exp run -S` writes the
# overrides into it: if the run fails, the workspace's params.yaml comes back as it was.
saved="$(mktemp)" run_overrides="$(mktemp)"
cp params.yaml "$saved"
restore_params() {
  local status=$?
  if [ "$status" -ne 0 ] && ! cmp -s "$saved" params.yaml; then
    cp "$saved" params.yaml
    echo "params.yaml restored" >&2
  fi
  rm -f "$saved" "$run_overrides"
}
trap restore_params EXIT
python -m stages.preflight "${preflight_args[@]}" --start "$run_overrides"
set_args=()
while IFS= read -r override; do set_args+=(-S "$override"); done < "$run_overrides"

if [ "$mode" = sweep ]; then
  sweep_args=("$model")
  [ -n "$epochs" ] && sweep_args+=(--epochs "$epochs")
  python -m stages.sweep "${sweep_args[@]}" "${set_args[@]}"
  exit 0
fi

target=()
[ "$model" = all ] || target=("evaluate@$model")
if [ ${#set_args[@]} -eq 0 ]; then
  python -m stages.exp_run --repro "${target[@]}"
  cat reports/comparison.md 2>/dev/null || true
  exit 0
fi
name=()
[ -n "$preset" ] && name=(-n "$preset-$(date +%Y%m%d-%H%M%S)")
python -m stages.exp_run "${name[@]}" "${set_args[@]}" "${target[@]}"
echo
python -m stages.show
