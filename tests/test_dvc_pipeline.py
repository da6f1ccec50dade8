"""The real `dvc repro` in a temporary git repository."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_training_params, update_params

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


def init_repo(project: Path, **params) -> Path:
    """git + dvc initialised in ``project``, params updated, everything committed."""
    git(project, "init", "-q")
    git(project, "config", "user.email", "test@example.com")
    git(project, "config", "user.name", "test")
    dvc(project, "init", "-q")
    update_params(project, **params)
    git(project, "add", ".")
    git(project, "commit", "-qm", "init")
    return project


@pytest.fixture
def repo(project: Path) -> Path:
    return init_repo(project, validate={"drift_tolerance": 1.0})


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
    dvc(repo, "checkout", "prepare")
    assert digest(repo / "data/prepared/cifar10.npz") == prepared
    assert "Data and pipelines are up to date" in dvc(repo, "repro", "eda").stdout


@pytest.fixture
def tiny_repo(project: Path) -> Path:
    return init_repo(
        project,
        **tiny_training_params(epochs=2),
        evaluate={"tsne_samples": 60, "gradcam_samples": 4, "grid_size": 8},
    )


def test_full_pipeline_experiments_and_plots(tiny_repo):
    dvc(tiny_repo, "repro")
    assert "Data and pipelines are up to date" in dvc(tiny_repo, "repro").stdout
    shown = json.loads(dvc(tiny_repo, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    evaluation = files["metrics/evaluate/vit.json"]["data"]
    for key in ("accuracy", "f1_weighted", "f1_macro", "loss", "top2_accuracy"):
        assert 0 <= evaluation[key] <= 10
    assert set(evaluation["calibration"]) >= {
        "ece",
        "mce",
        "nll",
        "brier",
        "temperature",
        "ece_scaled",
    }
    assert files["metrics/compare.json"]["data"]["best_model"] in {
        "resnet",
        "efficientnet",
        "vit",
        "ensemble",
    }
    assert "ensemble" in files["metrics/compare.json"]["data"]["models"]
    plots = json.loads(dvc(tiny_repo, "plots", "show", "--json", "--split").stdout)["data"]
    names = set(plots)
    assert {"vit loss (train vs val)", "Validation accuracy, all models"} <= names
    assert "evaluation/vit/live/plots/sklearn/confusion_matrix.json" in names
    assert "plots/compare/comparison.png" in names
    git(tiny_repo, "add", ".")
    git(tiny_repo, "commit", "-qm", "baseline")

    # a change to one model's section re-runs only that branch (and compare)
    only_vit = dvc(tiny_repo, "exp", "run", "-n", "vit-lr", "-S", "models.vit.lr=0.003")
    assert "Stage 'train@resnet' didn't change, skipping" in only_vit.stdout
    assert "Running stage 'train@vit'" in only_vit.stdout
    # a shared train key re-runs every model, and plots diff compares the experiments
    everything = dvc(tiny_repo, "exp", "run", "-n", "all-lr", "-S", "train.lr=0.002")
    for model in ("resnet", "efficientnet", "vit"):
        assert f"Running stage 'train@{model}'" in everything.stdout
    table = dvc(tiny_repo, "exp", "show", "--csv").stdout
    assert "all-lr" in table and "vit-lr" in table and "train.lr" in table
    diff = json.loads(
        dvc(tiny_repo, "plots", "diff", "HEAD", "all-lr", "--json", "--split").stdout
    )["data"]
    for name in (
        "Validation loss, all models",
        "evaluation/vit/live/plots/sklearn/confusion_matrix.json",
    ):
        revisions = {rev for entry in diff[name] for rev in entry["revisions"]}
        assert revisions == {"HEAD", "all-lr"}, (name, revisions)
