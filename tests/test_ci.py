"""`.gitlab-ci.yml` executed by gitlab-ci-local in the shell: the merge-request job against a
bare-git origin and a directory DVC remote, with a stand-in `cml` that records what it was
given, and the lint job with its real linters. .ci/run installs gitlab-ci-local
(GITLAB_CI_LOCAL names the executable; without it these tests are skipped with that reason)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_project, needs, offline_data, update_params
from tests.test_dvc_pipeline import commit_all, dvc, environment, git, init_repo, keep_models, tiny

pytestmark = pytest.mark.slow

GITLAB_CI_LOCAL = os.environ.get("GITLAB_CI_LOCAL") or shutil.which("gitlab-ci-local")
needs_gitlab_ci_local = needs(
    None if GITLAB_CI_LOCAL else "gitlab-ci-local is not installed (.ci/run installs it)",
    required_by="CIFAR10_REQUIRE_CI_TOOLS",
)
GITLAB_URL = "https://gitlab.example.com/team/cifar10.git"

STAND_IN_CML = """#!/usr/bin/env bash
# Stand-in for CML's CLI: records the arguments, the report and the images it links.
set -euo pipefail
printf '%s\\n' "$@" > "$CML_RECORD/args.txt"
report="${@: -1}"
cp "$report" "$CML_RECORD/report.md"
grep -o '([^)]*\\.png)' "$report" | tr -d '()' | while read -r image; do
  [ -f "$image" ] && cp --parents "$image" "$CML_RECORD/"
done
"""


# what the CI jobs run besides the stages: scripts, requirements, the linters' config
CI_FILES = (".gitlab-ci.yml", "scripts", "run.sh", ".ci", "pyproject.toml", "Containerfile")
CI_FILES += (
    ".containerignore",
    "requirements.txt",
    "requirements-remote.txt",
    "requirements-dev.txt",
)
CI_FILES += ("requirements-lint.txt",)


def ci_project(destination: Path) -> Path:
    return copy_project(destination, CI_FILES)


def gitlab_ci_local(checkout: Path, job: str, variables: dict[str, str], env: dict[str, str]):
    assert GITLAB_CI_LOCAL, "gitlab-ci-local: not installed and not in $GITLAB_CI_LOCAL"
    command = [GITLAB_CI_LOCAL, "--force-shell-executor", job]
    for key, value in variables.items():
        command += ["--variable", f"{key}={value}"]
    result = subprocess.run(
        command, cwd=checkout, env=env, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, f"{job}:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@needs_gitlab_ci_local
def test_merge_request_job_posts_the_report(tmp_path, image_tar):
    origin = tmp_path / "origin.git"
    storage = tmp_path / "dvc-storage"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))

    # main: a developer's results, pushed to the remote and to origin
    developer = ci_project(tmp_path / "developer")
    update_params(developer, **offline_data(image_tar))
    init_repo(developer, **tiny())
    keep_models(developer, ["resnet"])
    commit_all(developer, "one model")
    dvc(developer, "repro")
    # not the default remote in .dvc/config: the job finds it through DVC_REMOTE_URL only
    dvc(developer, "remote", "add", "--local", "storage", str(storage))
    dvc(developer, "push", "--run-cache", "-r", "storage")
    commit_all(developer, "results")
    git(developer, "remote", "add", "origin", GITLAB_URL)
    git(developer, "config", f"url.{origin}.insteadOf", GITLAB_URL)
    git(developer, "push", "-q", "origin", "main")

    # the merge request: one param changed
    git(developer, "checkout", "-q", "-b", "higher-lr")
    assert update_params(developer, train={"lr": 0.003})["train"]["lr"] == 0.003
    commit_all(developer, "a higher learning rate")
    git(developer, "push", "-q", "origin", "higher-lr")

    # the runner's checkout: a fresh clone of the MR branch
    checkout = tmp_path / "runner"
    git(tmp_path, "clone", "-q", "-b", "higher-lr", str(origin), str(checkout))
    git(checkout, "remote", "set-url", "origin", GITLAB_URL)
    git(checkout, "config", f"url.{origin}.insteadOf", GITLAB_URL)
    record = tmp_path / "cml-record"
    record.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cml").write_text(STAND_IN_CML)
    (bin_dir / "cml").chmod(0o755)
    env = environment(checkout)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    env["CML_RECORD"] = str(record)
    log = gitlab_ci_local(
        checkout,
        "mr-report",
        {
            "CI_PIPELINE_SOURCE": "merge_request_event",
            "CI_MERGE_REQUEST_TARGET_BRANCH_NAME": "main",
            "DVC_REMOTE_URL": str(storage),
            "REPO_TOKEN": "stand-in",
            "CIFAR10_VENV": str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv"))),
        },
        env,
    )

    # only what the param moves ran; the data stages came from the remote (dvc pull)
    assert "Stage 'prepare' didn't change, skipping" in log, log[-4000:]
    assert "Running stage 'prepare'" not in log
    assert "Running stage 'train@resnet'" in log
    args = (record / "args.txt").read_text().split()
    assert args[:3] == ["comment", "update", "--publish"] and "--target=pr" in args
    report = (record / "report.md").read_text()
    # the changed param, old and new
    assert re.search(r"train\.lr\s*\|\s*0\.001\s*\|\s*0\.003", report), report
    # the changed metric with its delta
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in report.splitlines()]
    loss = next(r for r in rows if r[0] == "metrics/evaluate/resnet.json" and r[1] == "loss")
    base, new, change = map(float, loss[2:5])
    assert change == pytest.approx(new - base, abs=2e-4), loss
    # images: rendered plots and changed PNGs, each file present
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    assert images, report
    assert all((record / image).is_file() for image in images)
    # the job pushed its results: the remote has everything the branch produced
    assert "in sync" in dvc(checkout, "status", "--cloud", "-r", "ci").stdout


@needs_gitlab_ci_local
def test_lint_job_runs_the_real_linters(tmp_path):
    checkout = ci_project(tmp_path / "project")
    git(checkout, "init", "-q", "-b", "main")
    commit_all(checkout, "import")
    env = environment(checkout)
    env["LINT_VENV"] = os.environ.get("LINT_VENV", str(tmp_path / "lint-venv"))
    log = gitlab_ci_local(checkout, "lint", {}, env)
    # the job's log shows each gate's verdict (ruff, ruff format, mypy; bandit, hadolint and
    # shellcheck print only problems) and the job passed
    for verdict in ("All checks passed!", "files already formatted", "Success: no issues found"):
        assert verdict in log, log[-3000:]
    assert "PASS  lint" in log
