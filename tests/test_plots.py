"""The compare stage's figures."""

from __future__ import annotations

from stages.common.plots import training_curves_figure


def test_training_curves_put_ticks_on_whole_epochs_only() -> None:
    curves = {
        "resnet": {"train/loss": [2.1, 1.7, 1.4], "val/accuracy": [0.3, 0.4, 0.5]},
        "vit": {"train/loss": [2.2, 1.9, 1.6], "val/accuracy": [0.2, 0.3, 0.4]},
    }
    figure = training_curves_figure(curves, {"resnet": "C0", "vit": "C1"})
    figure.canvas.draw()
    for axis in figure.axes:
        ticks = [tick for tick in axis.get_xticks() if 1 <= tick <= 3]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
