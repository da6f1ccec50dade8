"""`run.sh` with bad arguments or settings: one `error:` line, exit code 2, and nothing touched:
params.yaml byte for byte as it was, no stage run, no output deleted. (The issue-12 cases that
reach run.sh; the README's bad-input section counts the cases of every test table.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_project, offline_data, tiny_training_params, update_params

STEPS = list(range(1, 17))  # more unfreezing steps than test_vit has layer groups
CASES = [
    (["abc"], "EPOCHS must be a whole number >= 1, got 'abc'"),
    (["-1"], "EPOCHS must be a whole number >= 1, got '-1'"),
    (["0"], "EPOCHS must be a whole number >= 1, got '0'"),
    (["3", "resnet", "deploy"], "mode must be 'train' or 'sweep', got 'deploy'"),
    (["3", "all", "sweep"], "a sweep tunes one model"),
    (["3", "resnt"], "models.resnt: no such model"),
    (["1", "2", "3", "4"], "too many arguments"),
    (["--bogus"], "unknown option '--bogus'"),
    (["--preset", "nosuch"], "preset 'nosuch': no presets/nosuch.yaml"),
    (["-S", "train.lrr=0.1"], "train.lrr"),
    (["-S", "train.lr=-1"], "train.lr"),
    (["-S", "train.lr"], "-S train.lr"),
    (
        ["-S", "models.resnet.freezing.strategy=partial", "-S", "models.resnet.freezing.groups=99"],
        "models.resnet.freezing.groups",
    ),
    (
        [
            "-S",
            "models.vit.freezing.strategy=progressive",
            "-S",
            f"models.vit.freezing.schedule={STEPS}",
        ],
        "models.vit.freezing.schedule",
    ),
    (["-S", "data.subset=2", "-S", "train.batch_size=64"], "train.batch_size"),
    (["-S", "models.resnet.pretrained=/no/such/weights.safetensors"], "models.resnet.pretrained"),
    (["-S", "data.source=/no/such/cifar.tar.gz"], "data.source"),
]


@pytest.fixture(scope="module")
def clone(tmp_path_factory, image_tar) -> Path:
    """A git clone of the project, offline data, tiny models and one finished output."""
    project = copy_project(
        tmp_path_factory.mktemp("run_sh") / "project",
        ("run.sh", "scripts", "presets", "requirements.txt", "requirements-dev.txt"),
    )
    update_params(project, **offline_data(image_tar), **tiny_training_params())
    (project / "models/resnet").mkdir(parents=True)
    (project / "models/resnet/model.safetensors").write_bytes(b"earlier results")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    return project


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_run_is_one_line_exit_2_and_touches_nothing(clone, args, expected):
    params_before = (clone / "params.yaml").read_bytes()
    env = {
        **os.environ,
        "CIFAR10_VENV": str(Path(sys.executable).parent.parent),
        "DVC_NO_ANALYTICS": "1",
    }
    result = subprocess.run(
        ["bash", "run.sh", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:"), result.stderr
    assert expected in errors[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert (clone / "params.yaml").read_bytes() == params_before
    assert (clone / "models/resnet/model.safetensors").read_bytes() == b"earlier results"
    assert not (clone / "dvc.lock").exists() and not (clone / "data/prepared").exists()
