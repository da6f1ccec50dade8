"""Shared fixtures: a project copy to run stages in, and generated data sources."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import runpy
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages.common.config.params import Params, parse_params
from stages.common.models.checkpoint import InferenceSettings
from stages.common.plumbing.command import LOG_FORMAT
from tests import synthetic

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REAL_DATA = SHARED / "datasets" / "cifar10-jpeg.tar.gz"
REAL_WEIGHTS = SHARED / "weights" / "efficientnet_lite0.in1k.safetensors"
RELEASE_SETTINGS = InferenceSettings(tta="flip", temperature=1.7)  # released_project's
PROJECT_FILES = ["stages", "dvc.yaml", ".gitignore", ".dvcignore"]


def needs(missing: str | None, required_by: str = "") -> pytest.MarkDecorator:
    """Skip a test whose tool, service or data is absent (``missing`` says which, None when
    present), unless the environment variable ``required_by`` is set: CI sets it where it
    installed the thing, so that its absence fails there instead of passing unnoticed."""
    required = bool(required_by and os.environ.get(required_by))
    return pytest.mark.skipif(missing is not None and not required, reason=missing or "")


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return synthetic.write_image_folder(tmp_path_factory.mktemp("folder") / "cifar")


@pytest.fixture(scope="session")
def image_tar(image_folder, tmp_path_factory) -> Path:
    return synthetic.write_tar(image_folder, tmp_path_factory.mktemp("tar") / "cifar.tar.gz")


def merge_sections(base: dict, update: dict) -> dict:
    """``update`` merged into ``base`` in place (nested dicts); an empty mapping replaces."""
    for key, value in update.items():
        if value and isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_sections(base[key], value)
        else:
            base[key] = value
    return base


def committed_text(relative: str) -> str:
    """A file of the repository as committed (what a fresh clone has), or as it is where it is
    not committed: a README run leaves its experiment's params in the workspace's params.yaml,
    and the tests must pass in a used clone as in a fresh one."""
    shown = subprocess.run(
        ["git", "show", f"HEAD:./{relative}"], cwd=ROOT, capture_output=True, text=True
    )
    return shown.stdout if shown.returncode == 0 else (ROOT / relative).read_text()


def shipped_raw() -> dict:
    """The shipped (committed) params.yaml, parsed."""
    return yaml.safe_load(committed_text("params.yaml"))


def shipped(**sections) -> Params:
    """The shipped params.yaml with ``sections`` merged in, checked."""
    return parse_params(merge_sections(shipped_raw(), sections))


RUN_SH_FILES = (  # what run.sh needs beside the project's code
    "run.sh",
    "scripts",
    "presets",
    "requirements.txt",
    "requirements-remote.txt",
    "requirements-dev.txt",
)


def copy_project(destination: Path, extra: tuple[str, ...] = ()) -> Path:
    """The project's code, committed params and dvc.yaml in ``destination`` (no data, no git),
    and the ``extra`` files or folders of the repository a test needs (scripts, ...)."""
    destination.mkdir(parents=True, exist_ok=True)
    (destination / "params.yaml").write_text(committed_text("params.yaml"))
    copy_files(destination, (*PROJECT_FILES, *extra))
    return destination


def copy_files(destination: Path, names: tuple[str, ...]) -> None:
    """Files or folders of the repository into ``destination``, under the same names."""
    for name in names:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, destination / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(source, destination / name)


def update_params(project: Path, **sections) -> dict:
    """Merge ``sections`` (nested dicts) into project/params.yaml; an empty mapping replaces."""
    path = project / "params.yaml"
    params = merge_sections(yaml.safe_load(path.read_text()), sections)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def stage_environment(project: Path) -> dict[str, str]:
    """The environment a stage process started in ``project`` runs with: its code first."""
    return {**os.environ, "PYTHONPATH": str(project)}


def run_process(project: Path, module: str, *args: str, timeout: int = 600):
    """Run ``python -m module`` in ``project`` as DVC would; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=project,
        env=stage_environment(project),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_module(project: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m module args`` in ``project``, run inside this test process: the stage's own
    code path, exit code, stdout and stderr (log lines included), without a new process paying
    the import of torch and timm again (about 30 s per call on the 2-core CI machine). Tests
    about the process itself (DVC's view of it, kill -9, DDP) use run_process."""
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    level, argv, cwd = root.level, sys.argv, Path.cwd()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    code = 0
    try:
        os.chdir(project)
        sys.argv = [module, *args]
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as exit_:
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            except Exception:  # reported as the process would report it: traceback, exit 1
                traceback.print_exc()
                code = 1
    finally:
        os.chdir(cwd)
        sys.argv = argv
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess([module, *args], code, stdout.getvalue(), stderr.getvalue())


def offline_data(source: Path | str) -> dict:
    """params.yaml sections that read ``source`` instead of downloading CIFAR-10."""
    return {"downloads": {}, "data": {"source": str(source)}}


@pytest.fixture
def project(tmp_path, image_tar) -> Path:
    """A project copy whose data source is the generated image-folder archive."""
    copy = copy_project(tmp_path / "project")
    update_params(copy, **offline_data(image_tar))
    return copy


TINY_MODELS = {"resnet": "test_resnet", "efficientnet": "test_efficientnet", "vit": "test_vit"}


def tiny_training_params(epochs: int = 2, **train) -> dict:
    """params.yaml sections for fast CPU training of timm's tiny test models at 32 px."""
    models = {
        name: {
            "arch": arch,
            "pretrained": False,
            "img_size": 32,
            "lr_scale": 1.0,
            "freezing": {"strategy": "none", "groups": 0, "schedule": []},
        }
        for name, arch in TINY_MODELS.items()
    }
    return {
        "train": {
            "epochs": epochs,
            "batch_size": 32,
            "workers": 0,
            "patience": None,
            "warmup_epochs": 0.0,
            **train,
        },
        "models": models,
        "validate": {"drift_tolerance": 1.0},
        # two corruptions at two severities on 20 images: the whole path, in seconds
        "evaluate": {
            "robustness": {
                "corruptions": ["gaussian_noise", "contrast"],
                "severities": [1, 5],
                "images": 20,
            }
        },
    }


@pytest.fixture(scope="session")
def prepared_template(tmp_path_factory, image_tar) -> Path:
    """A project with prepared and validated synthetic data and tiny-model params."""
    template = copy_project(tmp_path_factory.mktemp("template") / "project")
    update_params(template, **offline_data(image_tar))
    update_params(template, **tiny_training_params())
    for module in ("stages.prepare", "stages.validate"):
        result = run_module(template, module)
        assert result.returncode == 0, result.stderr
    return template


@pytest.fixture
def ready_project(tmp_path, prepared_template) -> Path:
    """A fresh copy of the prepared project (data ready, nothing trained)."""
    return Path(shutil.copytree(prepared_template, tmp_path / "project"))


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory, prepared_template) -> Path:
    """The prepared project with the tiny ResNet trained (2 epochs)."""
    project = Path(shutil.copytree(prepared_template, tmp_path_factory.mktemp("trained") / "p"))
    result = run_module(project, "stages.train", "resnet")
    assert result.returncode == 0, result.stderr
    return project


@pytest.fixture
def trained_project(tmp_path, trained_template) -> Path:
    return Path(shutil.copytree(trained_template, tmp_path / "project"))


@pytest.fixture(scope="session")
def released_project(tmp_path_factory, trained_template) -> Path:
    """The trained tiny ResNet released with a TTA and a temperature, and exported."""
    from stages.common.models.checkpoint import ModelCheckpoint
    from stages.common.monitoring.drift import reference_of
    from stages.common.release.released_model import load_released

    project = Path(shutil.copytree(trained_template, tmp_path_factory.mktemp("serve") / "p"))
    model = ModelCheckpoint.load(project / "models/resnet/model.safetensors")
    release = project / "release/model.safetensors"
    release.parent.mkdir()
    ModelCheckpoint(
        model.info.model_copy(update={"inference": RELEASE_SETTINGS}), model.weights
    ).save(release)
    # the drift reference compare writes beside a release (compare's own is tested in
    # tests/test_evaluate.py): the test split as this model serves it
    test_images = np.load(project / "data/prepared/cifar10.npz")["test_images"]
    released = load_released(release)
    reference = reference_of(test_images, released.probabilities(test_images), model.info.classes)
    (release.parent / "drift_reference.json").write_text(json.dumps(reference.model_dump()))
    update_params(project, export={"latency_runs": 3, "latency_batches": [1, 8]})
    result = run_module(project, "stages.export")
    assert result.returncode == 0, result.stderr
    return project
