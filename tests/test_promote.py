"""The `promote-model` job's script against a real git repository: the released model artifact
of dvc.yaml registered and assigned to a stage in DVC's git-tag model registry (GTO)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import copy_project


def test_promote_registers_and_assigns_the_release(tmp_path):
    project = copy_project(
        tmp_path / "project",
        ("scripts", "requirements.txt", "requirements-remote.txt", "requirements-dev.txt"),
    )
    env = {
        **os.environ,
        "CIFAR10_VENV": str(Path(sys.executable).parent.parent),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "MODEL_STAGE": "prod",
    }
    env.pop("REPO_TOKEN", None)
    for command in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-qm", "x"]):
        subprocess.run(command, cwd=project, env=env, check=True)
    result = subprocess.run(
        ["bash", "scripts/promote_model.sh"], cwd=project, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tags = subprocess.run(["git", "tag"], cwd=project, capture_output=True, text=True).stdout
    assert "cifar10-classifier@v0.0.1" in tags.split()
    assert any(tag.startswith("cifar10-classifier#prod") for tag in tags.split())
    assert "tags created locally only" in result.stdout
