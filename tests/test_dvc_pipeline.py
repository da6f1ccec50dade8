"""The real `dvc repro` in a temporary git repository."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import update_params

pytestmark = pytest.mark.slow


def dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(project),
        "DVC_NO_ANALYTICS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def git(project: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


@pytest.fixture
def repo(project: Path) -> Path:
    git(project, "init", "-q")
    git(project, "config", "user.email", "test@example.com")
    git(project, "config", "user.name", "test")
    dvc(project, "init", "-q")
    update_params(project, validate={"drift_tolerance": 1.0})
    git(project, "add", ".")
    git(project, "commit", "-qm", "init")
    return project


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_data_stages_run_once_and_survive_bad_params(repo):
    dvc(repo, "repro", "eda")
    assert (repo / "plots/eda/samples.png").exists()
    assert "Data and pipelines are up to date" in dvc(repo, "repro", "eda").stdout
    shown = dvc(repo, "metrics", "show").stdout
    assert "metrics/validate.json" in shown and "metrics/eda.json" in shown
    assert "plots/eda/samples.png" in dvc(repo, "plots", "show", "--json").stdout
    prepared = digest(repo / "data/prepared/cifar10.npz")

    update_params(repo, data={"val_ratio": 1.5})
    failed = dvc(repo, "repro", "eda", check=False)
    assert failed.returncode != 0
    assert "data.val_ratio: Input should be less than 1 (got 1.5)" in failed.stderr
    # DVC removed the stage's outputs before running it; the cache brings them back.
    update_params(repo, data={"val_ratio": 0.1})
    dvc(repo, "checkout")
    assert digest(repo / "data/prepared/cifar10.npz") == prepared
    assert "Data and pipelines are up to date" in dvc(repo, "repro", "eda").stdout
