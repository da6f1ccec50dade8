"""A sweep trial's link to its Optuna study (stages/common/tuning/trial.py), on a real study."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import optuna
import pytest

from stages.common.config.tuning import TuneParams
from stages.common.tuning import trial
from stages.common.tuning.storage import storage_from_url
from tests.conftest import shipped


def test_every_objective_names_a_logged_metric_a_direction_and_a_result():
    objectives = get_args(TuneParams.model_fields["objective"].annotation)
    assert [trial.epoch_metric(o) for o in objectives] == [
        "val/loss",
        "val/accuracy",
        "val/f1_weighted",
    ]
    assert [trial.direction(o) for o in objectives] == ["minimize", "maximize", "maximize"]
    assert [trial.result_key(o) for o in objectives] == [
        "best_val_loss",
        "best_val_accuracy",
        "best_val_f1_weighted",
    ]


def test_a_trial_s_epochs_come_from_the_command_then_tune_then_train():
    tune = shipped().tune
    assert tune.model_copy(update={"epochs": None}).trial_epochs(None, 7) == 7
    assert tune.model_copy(update={"epochs": 3}).trial_epochs(None, 7) == 3
    assert tune.model_copy(update={"epochs": 3}).trial_epochs(2, 7) == 2


def test_outside_a_sweep_there_is_no_reporter(monkeypatch):
    monkeypatch.delenv(trial.ENV_TRIAL, raising=False)
    assert trial.trial_reporter(shipped().tune, 5) is None


def test_the_reporter_reports_each_epoch_and_the_pruner_stops_a_bad_trial(tmp_path, monkeypatch):
    """Two finished trials reached val/loss 1.0 at epoch 1; a third at 3.0 is pruned there
    (median pruner, no start-up trials), one at 0.5 is not."""
    url = str(tmp_path / "study.log")
    study = optuna.create_study(study_name="s", storage=storage_from_url(url))
    for _ in range(2):
        finished = study.ask()
        finished.report(1.0, 0)
        study.tell(finished, 1.0)
    tune = shipped().tune.model_copy(
        update={"pruner": "median", "startup_trials": 0, "objective": "val_loss"}
    )
    monkeypatch.setenv(trial.ENV_STORAGE, url)
    monkeypatch.setenv(trial.ENV_STUDY, "s")
    monkeypatch.setenv(trial.ENV_OBJECTIVE, "val_loss")
    for loss, pruned in ((0.5, False), (3.0, True)):
        monkeypatch.setenv(trial.ENV_TRIAL, str(study.ask()._trial_id))
        reporter = trial.trial_reporter(tune, epochs=5)
        assert reporter is not None and reporter.metric == "val/loss"
        assert reporter.should_stop(0, {"val/loss": loss, "val/accuracy": 0.1}) is pruned
    reported = [t.intermediate_values for t in study.get_trials(deepcopy=False)[2:]]
    assert reported == [{0: 0.5}, {0: 3.0}]


@pytest.mark.parametrize(
    ("pruner", "kind"),
    [
        ("median", optuna.pruners.MedianPruner),
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_the_pruner_is_the_one_tune_names(pruner, kind):
    assert isinstance(
        trial.make_pruner(shipped().tune.model_copy(update={"pruner": pruner}), 4), kind
    )


def test_a_trial_drops_the_metrics_it_inherited_and_keeps_its_own(tmp_path, monkeypatch):
    inside = tmp_path / ".dvc" / "tmp" / "exps" / "run1"
    metrics = {
        "metrics/prepare.json",
        "metrics/validate.json",
        "metrics/train/resnet.json",
        "metrics/train/vit.json",
        "metrics/evaluate/resnet.json",
        "metrics/compare.json",
    }
    for folder in (inside, tmp_path):
        for name in metrics:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("{}")
    monkeypatch.chdir(tmp_path)  # a normal checkout: nothing is deleted
    assert trial.drop_inherited_metrics("resnet") == []
    monkeypatch.chdir(inside)
    dropped = {str(path) for path in trial.drop_inherited_metrics("resnet")}
    assert dropped == {
        "metrics/train/vit.json",
        "metrics/evaluate/resnet.json",
        "metrics/compare.json",
    }
    left = {str(p.relative_to(inside)) for p in Path(inside).rglob("*.json")}
    assert left == metrics - dropped
