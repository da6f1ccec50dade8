#!/usr/bin/env bash
# Promote the released model (dvc.yaml artifact `cifar10-classifier`) in DVC's git-based model
# registry (GTO tags): register this commit's model as MODEL_VERSION (or the next version) and
# assign it to MODEL_STAGE. Needs a token that may push tags (REPO_TOKEN).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source "${CIFAR10_VENV:-.venv}/bin/activate"
artifact=cifar10-classifier
stage="${MODEL_STAGE:-prod}"
version_args=()
[ -n "${MODEL_VERSION:-}" ] && version_args=(--version "$MODEL_VERSION")
gto register "$artifact" HEAD "${version_args[@]}"
version="${MODEL_VERSION:-$(gto show "$artifact@latest" --version)}"
gto assign "$artifact" --version "$version" --stage "$stage"
if [ -n "${REPO_TOKEN:-}" ] && [ -n "${CI_SERVER_HOST:-}" ]; then
  git push "https://oauth2:${REPO_TOKEN}@${CI_SERVER_HOST}/${CI_PROJECT_PATH}.git" --tags
else
  echo "no REPO_TOKEN: tags created locally only"
fi
gto show "$artifact"
