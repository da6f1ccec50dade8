#!/usr/bin/env bash
# The merge-request job: pull the team's results and run-cache, reproduce what changed, push it
# back, and post the report against the target branch as one CML comment (kept current).
# Needs: DVC_REMOTE_URL (+ DVC_REMOTE_ENDPOINT for an S3-compatible store, and the remote's
# credentials), REPO_TOKEN, and GitLab's CI_MERGE_REQUEST_TARGET_BRANCH_NAME.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DVC_REMOTE_URL:?set the CI/CD variable DVC_REMOTE_URL to the DVC remote of the team}"
target="${CI_MERGE_REQUEST_TARGET_BRANCH_NAME:?not a merge-request pipeline}"
bash scripts/setup.sh
source "${CIFAR10_VENV:-.venv}/bin/activate"
export DVC_NO_ANALYTICS=1

dvc remote add --local --force --default ci "$DVC_REMOTE_URL"
# S3-compatible stores (MinIO, Ceph): the endpoint, and credentials from the usual AWS variables
[ -z "${DVC_REMOTE_ENDPOINT:-}" ] || dvc remote modify --local ci endpointurl "$DVC_REMOTE_ENDPOINT"
python -m stages.remote ci   # a refused key or a missing bucket: one line, before anything moves
python -m stages.check_params
# The branch's committed results (dvc.lock) and the run-cache: stages whose inputs did not
# change are checked out, not re-run. Missing entries are fine (a new branch, a first run).
dvc pull --run-cache --allow-missing || echo "dvc pull: some outputs are not on the remote yet"
dvc repro
dvc push --run-cache

git fetch --quiet --depth=50 origin "$target"
includes=()
[ -f benchmarks/results/throughput.md ] && includes=(--include benchmarks/results/throughput.md)
python -m stages.report --base "origin/$target" --out report.md "${includes[@]}"
cml comment update --publish --target=pr report.md
