"""The container's contract without a container runtime (no base image can be pulled here):
the entrypoint hands `podman run IMAGE 10 resnet`'s arguments to run.sh in the mounted clone,
runs a named program instead, and the Containerfile and .containerignore say what the image is."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT

RECORDING_RUN_SH = 'printf "%s\\n" "$PWD" "$@" > "$RECORD"\n'


def entrypoint(workdir: Path, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "home").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "CIFAR10_WORKDIR": str(workdir),
        "RECORD": str(tmp_path / "record.txt"),
        "HOME": str(tmp_path / "home"),  # the entrypoint's git config goes here
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts/entrypoint.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_arguments_reach_run_sh_in_the_mounted_clone(tmp_path):
    clone = tmp_path / "work"
    clone.mkdir()
    (clone / "run.sh").write_text(RECORDING_RUN_SH)
    result = entrypoint(clone, "10", "resnet", "--preset", "cpu", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "record.txt").read_text().split() == [
        str(clone),
        "10",
        "resnet",
        "--preset",
        "cpu",
    ]
    gitconfig = (tmp_path / "home/.gitconfig").read_text()
    assert f"directory = {clone}" in gitconfig


def test_a_program_name_runs_that_program(tmp_path):
    clone = tmp_path / "work"
    clone.mkdir()
    (clone / "run.sh").write_text(RECORDING_RUN_SH)
    result = entrypoint(clone, "python", "-c", "print('ran')", tmp_path=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ran"
    assert not (tmp_path / "record.txt").exists()


def test_without_a_mounted_clone_the_image_copy_runs(tmp_path):
    result = entrypoint(tmp_path / "absent", "--help", tmp_path=tmp_path)
    assert result.returncode == 0
    assert "no clone mounted" in result.stderr
    assert "bash run.sh [EPOCHS] [MODEL|all] [train|sweep]" in result.stdout


def test_containerfile_runs_run_sh_as_a_non_root_user():
    text = (ROOT / "Containerfile").read_text()
    entry = re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    assert entry and json.loads(entry.group(1)) == ["/opt/cifar10-dvc/scripts/entrypoint.sh"]
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^FROM \S*python:3\.1[1-9]", text, re.MULTILINE)
    assert "@dvcorg/cml" in text and "git" in text


def test_containerignore_keeps_environments_caches_and_data_out():
    ignored = (ROOT / ".containerignore").read_text().split()
    for entry in (".venv/", ".dvc/cache/", "data/", "models/", "**/__pycache__/"):
        assert entry in ignored, entry
