"""Figures of the evaluate and compare stages: titled, labelled, one colour per model."""

from __future__ import annotations

from collections.abc import Collection

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

ENSEMBLE_COLOUR = "dimgray"


def model_colour(index: int) -> str:
    """The colour of the index-th model of params.yaml, the same in every figure."""
    return plt.get_cmap("tab10")(index % 10)


def confusion_figure(matrix: np.ndarray, classes: list[str], title: str) -> Figure:
    """Row-normalised confusion matrix (recall per true class) with counts annotated."""
    normalised = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(8, 7))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for (row, column), value in np.ndenumerate(normalised):
        colour = "white" if value > 0.5 else "black"
        axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    axis.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title)
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true class")
    figure.tight_layout()
    return figure


def reliability_figure(before: dict, after: dict, temperature: float, title: str) -> Figure:
    """Accuracy against confidence per bin, before and after temperature scaling,
    with the confidence histogram below."""
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(6.5, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    bins = len(before["table"]["counts"])
    centres = (np.arange(bins) + 0.5) / bins
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    for label, result, colour in (
        (f"before (ECE {before['ece']:.3f})", before, "tab:red"),
        (f"after T={temperature:.2f} (ECE {after['ece']:.3f})", after, "tab:blue"),
    ):
        accuracy = result["table"]["accuracy"]
        filled = result["table"]["counts"] > 0
        top.plot(centres[filled], accuracy[filled], "o-", color=colour, label=label)
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left")
    top.set_title(title)
    for result, colour in ((before, "tab:red"), (after, "tab:blue")):
        share = result["table"]["counts"] / result["table"]["counts"].sum()
        bottom.bar(centres, share, width=1 / bins, alpha=0.5, color=colour)
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("share")
    bottom.set_xlim(0, 1)
    figure.tight_layout()
    return figure


def uncertainty_figure(
    confidence: np.ndarray, entropy: np.ndarray, correct: np.ndarray, title: str
) -> Figure:
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, values, name in ((axes[0], confidence, "confidence"), (axes[1], entropy, "entropy")):
        edges = np.linspace(values.min(), values.max() + 1e-9, 31)
        for mask, label, colour in (
            (correct, "correct", "tab:green"),
            (~correct, "wrong", "tab:red"),
        ):
            if mask.any():
                axis.hist(
                    values[mask],
                    bins=edges,
                    alpha=0.6,
                    color=colour,
                    density=True,
                    label=f"{label} ({mask.sum()})",
                )
        axis.set_xlabel(f"predictive {name}")
        axis.set_ylabel("density")
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def risk_coverage_figure(curves: dict[str, dict], colours: dict[str, str], title: str) -> Figure:
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    for name, curve in curves.items():
        axis.plot(
            curve["coverage"],
            curve["accuracy"],
            color=colours[name],
            label=f"{name} (AURC {curve['aurc']:.3f})",
        )
    axis.set_xlabel("coverage (share of predictions kept, most confident first)")
    axis.set_ylabel("accuracy on kept predictions")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def prediction_grid(
    images: np.ndarray, captions: list[str], colours: list[str], title: str
) -> Figure:
    columns = min(8, max(len(images), 1))
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.7, rows * 2.3))
    axes = np.atleast_1d(axes).ravel()
    for axis in axes:
        axis.axis("off")
    for axis, image, caption, colour in zip(axes, images, captions, colours):
        axis.imshow(image, interpolation="nearest")
        axis.set_title(caption, fontsize=7, color=colour)
    if not len(images):
        axes[0].text(0.5, 0.5, "none", ha="center", va="center")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def gradcam_figure(images: np.ndarray, maps: np.ndarray, captions: list[str], title: str) -> Figure:
    columns = len(images)
    figure, axes = plt.subplots(2, columns, figsize=(columns * 1.7, 3.9), squeeze=False)
    for column in range(columns):
        axes[0, column].imshow(images[column], interpolation="nearest")
        axes[0, column].set_title(captions[column], fontsize=7)
        axes[1, column].imshow(images[column], interpolation="nearest")
        axes[1, column].imshow(
            maps[column],
            cmap="jet",
            alpha=0.45,
            vmin=0,
            vmax=1,
            extent=(-0.5, images.shape[2] - 0.5, images.shape[1] - 0.5, -0.5),
        )
        axes[0, column].axis("off")
        axes[1, column].axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def tsne_figure(points: np.ndarray, labels: np.ndarray, classes: list[str], title: str) -> Figure:
    figure, axis = plt.subplots(figsize=(7.5, 6.5))
    palette = plt.get_cmap("tab10")
    for label, name in enumerate(classes):
        mask = labels == label
        axis.scatter(points[mask, 0], points[mask, 1], s=6, color=palette(label % 10), label=name)
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(markerscale=3, fontsize=8, loc="best")
    figure.tight_layout()
    return figure


def per_class_figure(per_class: dict[str, dict], title: str) -> Figure:
    classes = list(per_class)
    positions = np.arange(len(classes))
    figure, axis = plt.subplots(figsize=(10, 4))
    for offset, (metric, colour) in enumerate(
        (("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:green"))
    ):
        values = [per_class[name][metric] for name in classes]
        axis.bar(positions + (offset - 1) * 0.27, values, 0.27, label=metric, color=colour)
    axis.set_xticks(positions, classes, rotation=30)
    axis.set_ylim(0, 1)
    axis.set_title(title)
    axis.legend(ncol=3)
    figure.tight_layout()
    return figure


def comparison_figure(
    rows: list[dict], colours: dict[str, str], metrics: list[tuple[str, str]], title: str
) -> Figure:
    """One bar panel per metric, one bar per model (and the ensemble)."""
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4), squeeze=False)
    names = [row["model"] for row in rows]
    for axis, (key, label) in zip(axes[0], metrics):
        values = [row.get(key) for row in rows]
        shown = [(n, v) for n, v in zip(names, values) if v is not None]
        bars = axis.bar(
            [n for n, _ in shown], [v for _, v in shown], color=[colours[n] for n, _ in shown]
        )
        axis.bar_label(bars, fmt="%.3g", fontsize=8)
        axis.set_title(label)
        axis.tick_params(axis="x", rotation=20)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def training_curves_figure(
    curves: dict[str, dict[str, list[float]]],
    colours: dict[str, str],
    students: Collection[str] = (),
) -> Figure:
    """Per-epoch curves of every model: one panel per metric, one line per model.

    A distilled student's ``train/loss`` is the loss it minimised, soft targets mixed with the
    labels, not the others' cross-entropy: its line is dashed and its legend entry says so."""
    keys = list(next(iter(curves.values())))
    longest = max(
        (len(series) for curve in curves.values() for series in curve.values()), default=1
    )
    figure, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.8), squeeze=False)
    for axis, key in zip(axes[0], keys):
        for name, series in curves.items():
            if series[key]:
                epochs = np.arange(1, len(series[key]) + 1)
                distilled = name in students and key == "train/loss"
                label = f"{name} (distillation loss)" if distilled else name
                style = "o--" if distilled else "o-"
                axis.plot(
                    epochs, series[key], style, color=colours[name], label=label, markersize=3
                )
        axis.set_title(key)
        axis.set_xlabel("epoch")
        # whole epochs only, also for a run of one or two (matplotlib pads a single point's
        # axis to 0.94..1.06 and would tick it in fractions)
        axis.set_xlim(0.5, max(longest, 1) + 0.5)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axis.grid(alpha=0.3)
    axes[0, 0].legend()
    figure.suptitle("Training curves, all models")
    figure.tight_layout()
    return figure


def robustness_heatmap(accuracy: dict[str, dict[str, float]], clean: float, title: str) -> Figure:
    """Accuracy per corruption (rows) and severity (columns), with the clean accuracy of the
    same images as the first column, annotated."""
    corruptions = list(accuracy)
    severities = list(next(iter(accuracy.values())))
    table = np.array([[clean] + [accuracy[c][s] for s in severities] for c in corruptions])
    figure, axis = plt.subplots(figsize=(1.0 * len(severities) + 4, 0.42 * len(corruptions) + 1.6))
    image = axis.imshow(table, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for (row, column), value in np.ndenumerate(table):
        axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8)
    axis.set_xticks(range(len(severities) + 1), ["clean", *severities])
    axis.set_yticks(range(len(corruptions)), [c.replace("_", " ") for c in corruptions])
    axis.axvline(0.5, color="black", linewidth=1)
    axis.set_xlabel("severity")
    axis.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axis, fraction=0.046, label="accuracy")
    figure.tight_layout()
    return figure


def robustness_comparison_figure(
    robustness: dict[str, dict], colours: dict[str, str], title: str
) -> Figure:
    """Every model under corruption: accuracy against severity (0 = clean, the mean over the
    corruptions), and the mean accuracy per corruption."""
    figure, (by_severity, by_corruption) = plt.subplots(
        1, 2, figsize=(13, 5.5), gridspec_kw={"width_ratios": [1, 1.6]}
    )
    corruptions = list(next(iter(robustness.values()))["by_corruption"])
    width = 0.8 / len(robustness)
    for k, (name, details) in enumerate(robustness.items()):
        severities = [0, *(int(s) for s in details["by_severity"])]
        means = [details["clean_accuracy"], *details["by_severity"].values()]
        label = f"{name} (mCA {details['mca']:.3f})"
        by_severity.plot(severities, means, "o-", color=colours[name], label=label)
        positions = np.arange(len(corruptions)) + (k - (len(robustness) - 1) / 2) * width
        values = [details["by_corruption"].get(c, np.nan) for c in corruptions]
        by_corruption.barh(positions, values, height=width, color=colours[name], label=name)
    by_severity.set_xlabel("severity (0 = clean)")
    by_severity.set_ylabel("accuracy, mean over corruptions")
    by_severity.set_ylim(0, 1)
    by_severity.grid(alpha=0.3)
    by_severity.legend()
    by_corruption.set_yticks(range(len(corruptions)), [c.replace("_", " ") for c in corruptions])
    by_corruption.invert_yaxis()
    by_corruption.set_xlim(0, 1)
    by_corruption.set_xlabel("accuracy, mean over severities")
    by_corruption.grid(alpha=0.3, axis="x")
    figure.suptitle(title)
    figure.tight_layout()
    return figure
