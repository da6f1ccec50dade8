"""The compare stage's figures."""

from __future__ import annotations

import pytest

from stages.common.evaluation.plots import training_curves_figure


@pytest.mark.parametrize("epochs", [1, 2, 3, 12])
def test_training_curves_put_ticks_on_whole_epochs_only(epochs: int) -> None:
    curves = {
        "resnet": {
            "train/loss": [2.1 - e / 10 for e in range(epochs)],
            "val/accuracy": [0.3] * epochs,
        },
        "vit": {
            "train/loss": [2.2] * epochs,
            "val/accuracy": [0.2 + e / 20 for e in range(epochs)],
        },
    }
    figure = training_curves_figure(curves, {"resnet": "C0", "vit": "C1"})
    figure.canvas.draw()
    for axis in figure.axes:
        low, high = axis.get_xlim()
        ticks = [tick for tick in axis.get_xticks() if low <= tick <= high]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
        assert all(1 <= tick <= epochs for tick in ticks), ticks
        if epochs <= 3:  # a short run: every epoch, and nothing but epochs
            assert ticks == list(range(1, epochs + 1)), ticks


def test_a_students_training_loss_is_dashed_and_named_as_its_distillation_loss() -> None:
    curves = {
        "airbench": {"train/loss": [1.2, 0.6], "val/loss": [1.0, 0.5]},
        "airbench_kd": {"train/loss": [0.6, 0.2], "val/loss": [0.9, 0.45]},
    }
    figure = training_curves_figure(
        curves, {"airbench": "C0", "airbench_kd": "C1"}, ["airbench_kd"]
    )
    train_loss, val_loss = figure.axes
    labels = {line.get_label(): line.get_linestyle() for line in train_loss.get_lines()}
    assert labels == {"airbench": "-", "airbench_kd (distillation loss)": "--"}
    # its validation loss is the same cross-entropy as everyone's: drawn like the others'
    assert {line.get_linestyle() for line in val_loss.get_lines()} == {"-"}
    legend = [text.get_text() for text in train_loss.get_legend().get_texts()]
    assert legend == ["airbench", "airbench_kd (distillation loss)"]
