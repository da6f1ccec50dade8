"""A sweep's bookkeeping without DVC: the trial's overrides, interrupted trials run again, and
plots a reader can read."""

from __future__ import annotations

import optuna
import pytest
from matplotlib.colors import to_rgb

from stages.common.reporting.sweep_summary import draw_plots
from stages.common.tuning.study import INTERRUPTED, RETRY_OF, retry_interrupted, trial_overrides
from stages.common.tuning.sweep import Sweep
from tests.conftest import shipped, shipped_raw


def test_a_trial_s_own_values_replace_the_command_line_s():
    """A preset's train.epochs=3 and the sweep's 1 epoch per trial were both passed to DVC,
    and the "re-run the best" line said train.epochs twice."""
    sweep = Sweep(
        shipped(), shipped_raw(), "resnet", "s", "sqlite://", 1, ["train.epochs=3", "seed=7"]
    )
    overrides = trial_overrides(sweep, {"train.lr": 0.01})
    assert overrides == ["seed=7", "train.lr=0.01", "train.epochs=1"]


def test_an_interrupted_trial_s_params_run_again_once():
    study = optuna.create_study()
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 0.5},
            distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
            state=optuna.trial.TrialState.FAIL,
            user_attrs={INTERRUPTED: True},
        )
    )
    retry_interrupted(study)
    retry_interrupted(study)  # a second start queues nothing more
    queued = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(queued) == 1
    assert queued[0].system_attrs["fixed_params"] == {"x": 0.5}  # what the next trial runs
    assert queued[0].user_attrs[RETRY_OF] == 0


def test_parallel_coordinates_name_every_axis_whole_and_draw_no_line_white(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    study.optimize(
        lambda t: (
            t.suggest_float("models.resnet.lr_scale", 0.1, 10, log=True)
            + t.suggest_float("train.label_smoothing", 0, 0.2)
        ),
        6,
    )
    sweep = Sweep(shipped(), {}, "resnet", "s", "sqlite://", 3, [])
    sweep.folder.mkdir(parents=True)
    captured = {}
    monkeypatch.setattr(
        "stages.common.reporting.sweep_summary.save_figure",
        lambda figure, path: captured.update({path.name: figure}),
    )
    draw_plots(sweep, study, complete=6)
    axes = captured["parallel_coordinate.png"].axes[0]
    labels = [label.get_text() for label in axes.get_xticklabels()]
    assert labels[1:] == ["models.resnet.lr_scale", "train.label_smoothing"]
    colours = [colour for c in axes.collections for colour in c.get_colors()]
    assert colours and max(min(to_rgb(colour)) for colour in colours) < 0.9  # no line near white
    assert to_rgb(axes.get_facecolor()) == pytest.approx((1, 1, 1))
