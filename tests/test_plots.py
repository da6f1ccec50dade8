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
