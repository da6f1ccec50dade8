"""Where a run's params come from: the committed params.yaml, then the preset, --data, -S and
EPOCHS; every difference named with its source; the workspace's own changes set aside."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from stages.common.config import param_changes
from stages.common.config.param_changes import (
    data_layer,
    describe_changes,
    epochs_layer,
    preset_layer,
    resolve,
    set_layer,
    start_run,
)
from stages.common.config.presets import load_preset
from tests.conftest import ROOT, committed_text


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A git repository whose params.yaml is the shipped one, committed; run from there."""
    (tmp_path / "params.yaml").write_text(committed_text("params.yaml"))
    for command in (["init", "-q"], ["add", "params.yaml"], ["commit", "-qm", "params"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *command],
            cwd=tmp_path,
            check=True,
        )
    monkeypatch.chdir(tmp_path)
    return tmp_path


PARAMS = Path("params.yaml")


def edit_workspace(**train) -> None:
    raw = yaml.safe_load(PARAMS.read_text())
    raw["train"].update(train)
    PARAMS.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_each_difference_is_named_with_the_layer_that_made_it(clone):
    smoke = load_preset("smoke", ROOT / "presets")
    layers = [preset_layer(smoke), data_layer("/data/c.tar"), set_layer(["train.lr=0.003"])]
    run = resolve([*layers, epochs_layer(2)], from_workspace=False)
    sources = {change.key: change.source for change in run.changes}
    assert sources["models.resnet.arch"] == "preset smoke"
    assert sources["data.source"] == "--data" and sources["downloads.cifar10"] == "--data"
    assert sources["train.lr"] == "-S" and sources["train.epochs"] == "EPOCHS"
    # a key the preset sets and -S sets again is -S's
    again = resolve([preset_layer(smoke), set_layer(["train.batch_size=32"])], False)
    assert {c.key: c.source for c in again.changes}["train.batch_size"] == "-S"
    assert run.applied.params.train.lr == 0.003 and run.applied.params.train.epochs == 2
    assert run.overrides[-2:] == ["train.lr=0.003", "train.epochs=2"]
    lines = describe_changes(run)
    assert lines[0].startswith("params that differ from the committed params.yaml (17 from ")
    assert "1 from -S, 1 from EPOCHS):" in lines[0]


def test_a_model_added_or_removed_is_one_line(clone):
    transfer = load_preset("transfer", ROOT / "presets")
    run = resolve([preset_layer(transfer)], from_workspace=False)
    whole = {(c.key, c.after) for c in run.changes if c.key.count(".") == 1}
    assert {("models.lite0", "added"), ("models.resnet", "removed")} <= whole
    assert not any(c.key.startswith("models.lite0.") for c in run.changes)


def test_the_workspace_counts_only_when_asked(clone):
    edit_workspace(amp=False, label_smoothing=0.05)
    committed = resolve([set_layer(["train.lr=0.003"])], from_workspace=False)
    assert [c.key for c in committed.changes] == ["train.lr"]
    assert committed.left_out == ["train.amp", "train.label_smoothing"]
    assert committed.applied.params.train.amp == "auto"
    assert "--from-workspace keeps them" in describe_changes(committed)[-1]

    kept = resolve([set_layer(["train.lr=0.003"])], from_workspace=True)
    assert {c.key: c.source for c in kept.changes} == {
        "train.amp": "workspace",
        "train.label_smoothing": "workspace",
        "train.lr": "-S",
    }
    assert kept.left_out == [] and kept.applied.params.train.amp is False


def test_a_hand_edit_is_saved_before_the_run_and_the_last_run_s_params_are_not(clone):
    edit_workspace(lr=0.5)
    edited = PARAMS.read_text()
    run = resolve([set_layer(["train.epochs=3"])], from_workspace=False)
    saved = start_run(run)
    assert saved is not None and saved.read_text() == edited
    assert PARAMS.read_text() == committed_text_here(clone)
    # DVC's run writes the overrides into params.yaml; the next run finds them there
    PARAMS.write_text(run.applied.text)
    assert start_run(resolve([], from_workspace=False)) is None
    assert PARAMS.read_text() == committed_text_here(clone)
    assert len(list(param_changes.SET_ASIDE.glob("params.yaml.*"))) == 1


def committed_text_here(clone) -> str:
    return subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout


def test_without_a_commit_the_workspace_is_the_start(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text(committed_text("params.yaml"))
    monkeypatch.chdir(tmp_path)
    edit_workspace(lr=0.5)
    run = resolve([], from_workspace=False)
    assert run.changes == [] and run.applied.params.train.lr == 0.5
