"""Shared fixtures: a project copy to run stages in, and generated data sources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import synthetic

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL_DATA = SHARED / "datasets" / "cifar10-jpeg.tar.gz"
REAL_WEIGHTS = SHARED / "weights" / "efficientnet_lite0.in1k.safetensors"
PROJECT_FILES = ["stages", "params.yaml", "dvc.yaml"]


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return synthetic.write_image_folder(tmp_path_factory.mktemp("folder") / "cifar")


@pytest.fixture(scope="session")
def image_tar(image_folder, tmp_path_factory) -> Path:
    return synthetic.write_tar(image_folder, tmp_path_factory.mktemp("tar") / "cifar.tar.gz")


def copy_project(destination: Path) -> Path:
    """The project's code, params and dvc.yaml in ``destination`` (no data, no git)."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, destination / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(source, destination / name)
    return destination


def update_params(project: Path, **sections) -> dict:
    """Merge ``sections`` (nested dicts) into project/params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())

    def merge(base: dict, update: dict) -> None:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value

    merge(params, sections)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def run_module(project: Path, module: str, *args: str, timeout: int = 600):
    """Run ``python -m module`` in ``project`` as DVC would; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def project(tmp_path, image_tar) -> Path:
    """A project copy whose data source is the generated image-folder archive."""
    copy = copy_project(tmp_path / "project")
    update_params(copy, data={"source": str(image_tar)})
    return copy
