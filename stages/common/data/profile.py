"""Exploratory plots and numbers of the prepared data set."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from stages.common.data.checks import channel_stats
from stages.common.data.prepared import SPLITS, PreparedData

CHANNEL_COLOURS = ("tab:red", "tab:green", "tab:blue")
SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


def class_balance_figure(data: PreparedData) -> Figure:
    figure, axes = plt.subplots(figsize=(10, 4.5))
    positions = np.arange(len(data.classes))
    width = 0.8 / len(SPLITS)
    for offset, name in enumerate(SPLITS):
        counts = np.bincount(data.split(name).labels, minlength=len(data.classes))
        axes.bar(positions + offset * width, counts, width, label=name, color=SPLIT_COLOURS[name])
    axes.set_xticks(positions + width * (len(SPLITS) - 1) / 2, data.classes, rotation=30)
    axes.set_ylabel("images")
    axes.set_title("Images per class and split")
    axes.set_ylim(0, axes.get_ylim()[1] * 1.15)  # room for the legend above the bars
    axes.legend(ncol=len(SPLITS), loc="upper center")
    figure.tight_layout()
    return figure


def channel_histogram_figure(data: PreparedData, bins: int) -> Figure:
    figure, axes = plt.subplots(1, len(SPLITS), figsize=(13, 3.8), sharey=True)
    edges = np.linspace(0, 256, bins + 1)
    for axis, name in zip(axes, SPLITS):
        pixels = data.split(name).images.reshape(-1, 3)
        for channel, colour in enumerate(CHANNEL_COLOURS):
            counts, _ = np.histogram(pixels[:, channel], bins=edges)
            axis.stairs(counts / counts.sum(), edges, color=colour, label="RGB"[channel])
        axis.set_title(f"{name}: pixel intensities")
        axis.set_xlabel("intensity (0-255)")
    axes[0].set_ylabel("fraction of pixels")
    axes[0].legend()
    figure.tight_layout()
    return figure


def sample_grid_figure(data: PreparedData, per_class: int, seed: int) -> Figure:
    """``per_class`` random training images of every class, one row per class."""
    rng = np.random.default_rng(seed)
    rows = len(data.classes)
    figure, axes = plt.subplots(rows, per_class, figsize=(per_class * 0.9, rows * 0.95))
    axes = np.asarray(axes).reshape(rows, per_class)
    for label, class_name in enumerate(data.classes):
        members = np.flatnonzero(data.train.labels == label)
        chosen = rng.choice(members, min(per_class, len(members)), replace=False)
        for column, axis in enumerate(axes[label]):
            axis.axis("off")
            if column < len(chosen):
                axis.imshow(data.train.images[chosen[column]], interpolation="nearest")
        axes[label, 0].set_title(class_name, fontsize=8, loc="left")
    figure.suptitle("Random training images per class")
    figure.tight_layout()
    return figure


def class_mean_figure(data: PreparedData) -> Figure:
    figure, axes = plt.subplots(1, len(data.classes), figsize=(len(data.classes) * 1.3, 1.9))
    for label, (axis, class_name) in enumerate(zip(np.atleast_1d(axes), data.classes)):
        members = data.train.images[data.train.labels == label]
        axis.imshow(members.mean(axis=0).astype(np.uint8), interpolation="nearest")
        axis.set_title(class_name, fontsize=8)
        axis.axis("off")
    figure.suptitle("Mean training image per class")
    figure.tight_layout()
    return figure


def class_channel_stats(data: PreparedData) -> dict[str, dict[str, list[float]]]:
    """Per-class channel mean and std of the training split (0..1 scale)."""
    stats = {}
    for label, class_name in enumerate(data.classes):
        mean, std = channel_stats(data.train.images[data.train.labels == label])
        stats[class_name] = {"mean": mean.round(4).tolist(), "std": std.round(4).tolist()}
    return stats
