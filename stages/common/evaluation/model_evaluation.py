"""Evaluation of one trained model in four steps with small typed values between them:
:func:`infer` (logits) -> :func:`score` (numbers) -> :func:`draw` (figures) -> :func:`write`.

Used by the evaluate stage for a pipeline model and for any checkpoint path.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from stages.common.config.evaluation import EvaluateParams
from stages.common.data.prepared import PreparedData
from stages.common.evaluation import explain, plots
from stages.common.evaluation import metrics as m
from stages.common.evaluation.robustness import Robustness, evaluate_robustness
from stages.common.models.inference import LoadedModel, predict_logits
from stages.common.plumbing.files import copy_file, save_figure, write_atomic, write_json
from stages.common.plumbing.output_paths import ModelPaths

log = logging.getLogger(__name__)
RISK_COVERAGE_POINTS = 101
# what DVCLive writes under evaluation/<m>/live/ (dvc.yaml declares these two plots)
DVCLIVE_PLOTS = ("plots/sklearn/confusion_matrix.json", "plots/custom/risk_coverage.json")


@dataclass(frozen=True)
class Outputs:
    """Where one evaluation writes."""

    metrics: Path
    details: Path
    predictions: Path
    live: Path
    figures: Path
    speed: Path  # apart from what compare reads: a re-run's timing alone changes nothing there

    @classmethod
    def of_model(cls, where: ModelPaths) -> Outputs:
        return cls(
            where.evaluate_metrics,
            where.evaluation_details,
            where.predictions,
            where.evaluation_live,
            where.evaluation_figures,
            where.evaluate_speed,
        )

    @classmethod
    def in_folder(cls, folder: Path) -> Outputs:
        """Everything in one folder (evaluating a checkpoint outside the pipeline)."""
        return cls(
            folder / "metrics.json",
            folder / "details.json",
            folder / "predictions.npz",
            folder / "live",
            folder / "plots",
            folder / "speed.json",
        )


@dataclass
class Inference:
    """Logits of the test and validation splits."""

    test_logits: np.ndarray  # float64 (N, classes)
    val_logits: np.ndarray
    test_seconds: float
    robustness: Robustness | None  # None: evaluate.robustness.enabled is false


@dataclass
class Scores:
    """Every number of an evaluation, and the arrays the figures need."""

    headline: dict[str, float | None]  # the DVC metrics: compared across experiments
    details: dict[str, Any]  # per-class, calibration, uncertainty
    speed: dict[str, float]  # images per second (kept apart from the details)
    probabilities: np.ndarray
    scaled: np.ndarray  # after temperature scaling
    temperature: float
    tables: dict[str, dict]  # reliability bins before/after scaling
    curve: dict  # risk-coverage
    notes: list[str] = field(default_factory=list)


def infer(
    loaded: LoadedModel, data: PreparedData, settings: EvaluateParams, seed: int, name: str
) -> Inference:
    started = time.perf_counter()
    test = predict_logits(
        loaded.model,
        data.test.images,
        loaded.device_input,
        settings.batch_size,
        tta=settings.tta,
        progress=f"{name} test",
    )
    seconds = time.perf_counter() - started
    val = predict_logits(
        loaded.model,
        data.val.images,
        loaded.device_input,
        settings.batch_size,
        tta=settings.tta,
    )
    robustness = None
    if settings.robustness.enabled:
        robustness = evaluate_robustness(loaded, data.test, settings, seed, name)
    return Inference(test.double().numpy(), val.double().numpy(), seconds, robustness)


def score(inference: Inference, data: PreparedData, settings: EvaluateParams) -> Scores:
    labels, classes, bins = data.test.labels, data.classes, settings.calibration_bins
    probabilities = m.softmax(inference.test_logits)
    results = m.test_metrics(probabilities, labels, classes)
    temperature = m.fit_temperature(inference.val_logits, data.val.labels)
    scaled = m.softmax(inference.test_logits, temperature)
    tables = {
        "before": m.reliability_bins(probabilities, labels, bins),
        "after": m.reliability_bins(scaled, labels, bins),
    }
    before = m.calibration_metrics(probabilities, labels, bins, tables["before"])
    after = m.calibration_metrics(scaled, labels, bins, tables["after"])
    confidence, entropy = probabilities.max(1), m.entropy(probabilities)
    correct = probabilities.argmax(1) == labels
    curve = m.risk_coverage(probabilities, labels)
    headline = {
        "accuracy": results["accuracy"],
        "f1_weighted": results["f1_weighted"],
        "loss": results["loss"],
        "ece": before["ece"],
        "ece_scaled": after["ece"],
    }
    details = {
        **results,
        "calibration": {
            **before,
            "temperature": temperature,
            **{f"{k}_scaled": v for k, v in after.items()},
            "reliability_before": tables["before"],
            "reliability_after": tables["after"],
        },
        "uncertainty": {
            "confidence_correct": _mean(confidence[correct]),
            "confidence_wrong": _mean(confidence[~correct]),
            "entropy_correct": _mean(entropy[correct]),
            "entropy_wrong": _mean(entropy[~correct]),
            "aurc": curve["aurc"],
            "accuracy_at_80_coverage": _accuracy_at(curve, 0.8),
            "accuracy_at_50_coverage": _accuracy_at(curve, 0.5),
        },
        "tta": settings.tta,
    }
    speed = {"test_images_per_second": len(labels) / inference.test_seconds}
    scores = Scores(headline, details, speed, probabilities, scaled, temperature, tables, curve)
    if inference.robustness:
        _score_robustness(inference.robustness, settings, scores)
    return scores


def _score_robustness(robustness: Robustness, settings: EvaluateParams, scores: Scores) -> None:
    if settings.robustness.images is not None:
        _clipped(
            settings.robustness.images,
            robustness.images,
            "evaluate.robustness.images",
            scores.notes,
        )
    scores.headline["mca"] = robustness.mca
    scores.headline["mca_drop"] = robustness.mca_drop
    scores.details["robustness"] = robustness.details()
    scores.speed["robustness_seconds"] = robustness.seconds


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _accuracy_at(curve: dict, coverage: float) -> float:
    index = max(int(np.ceil(coverage * len(curve["accuracy"]))) - 1, 0)
    return float(curve["accuracy"][index])


@dataclass(frozen=True)
class FigureContext:
    """What the figures need besides the scores."""

    loaded: LoadedModel
    data: PreparedData
    settings: EvaluateParams
    seed: int
    name: str
    title: str
    colour: Any


def draw(scores: Scores, context: FigureContext) -> dict[str, Figure]:
    """Every figure of the evaluation, by file name. Requests larger than the data are clipped
    and noted in ``scores.notes``."""
    test, classes, title = context.data.test, context.data.classes, context.title
    predicted = scores.probabilities.argmax(1)
    matrix = confusion_matrix(test.labels, predicted, labels=range(len(classes)))
    calibration = scores.details["calibration"]
    figures = {
        "confusion_matrix.png": plots.confusion_figure(matrix, classes, f"{title}: test confusion"),
        "reliability.png": plots.reliability_figure(
            {"ece": calibration["ece"], "table": scores.tables["before"]},
            {"ece": calibration["ece_scaled"], "table": scores.tables["after"]},
            scores.temperature,
            f"{title}: reliability on test",
        ),
        "uncertainty.png": plots.uncertainty_figure(
            scores.probabilities.max(1),
            m.entropy(scores.probabilities),
            predicted == test.labels,
            f"{title}: confidence and entropy, correct vs wrong",
        ),
        "risk_coverage.png": plots.risk_coverage_figure(
            {context.name: scores.curve},
            {context.name: context.colour},
            f"{title}: selective prediction",
        ),
        "per_class.png": plots.per_class_figure(
            scores.details["per_class"], f"{title}: per-class scores"
        ),
    }
    rng = np.random.default_rng(context.seed)
    figures.update(_prediction_grids(scores, context, rng))
    figures["gradcam.png"] = _gradcam_panel(scores, context, rng)
    figures["tsne.png"] = _tsne_panel(scores, context)
    if "robustness" in scores.details:
        robustness = scores.details["robustness"]
        figures["robustness.png"] = plots.robustness_heatmap(
            robustness["accuracy"],
            robustness["clean_accuracy"],
            f"{title}: accuracy under corruption ({robustness['images']} test images, "
            f"mCA {robustness['mca']:.3f})",
        )
    return figures


def _clipped(requested: int, available: int, key: str, notes: list[str]) -> int:
    if requested > available:
        note = f"{key}={requested} is more than the {available} available; using {available}"
        log.warning(note)
        notes.append(note)
    return min(requested, available)


def _prediction_grids(
    scores: Scores, context: FigureContext, rng: np.random.Generator
) -> dict[str, Figure]:
    test, classes, size = context.data.test, context.data.classes, context.settings.grid_size
    predictions, confidence = scores.probabilities.argmax(1), scores.probabilities.max(1)
    correct_index = np.flatnonzero(predictions == test.labels)
    wrong_index = np.flatnonzero(predictions != test.labels)
    count = _clipped(size, len(correct_index), "evaluate.grid_size (correct)", scores.notes)
    shown_correct = np.sort(rng.choice(correct_index, count, replace=False))
    count = _clipped(size, len(wrong_index), "evaluate.grid_size (wrong)", scores.notes)
    most_confident_wrong = wrong_index[np.argsort(-confidence[wrong_index], kind="stable")][:count]

    def grid(indices: np.ndarray, colour: str, heading: str) -> Figure:
        captions = [
            f"true {classes[test.labels[i]]}\npred {classes[predictions[i]]} {confidence[i]:.0%}"
            for i in indices
        ]
        return plots.prediction_grid(
            test.images[indices], captions, [colour] * len(indices), f"{context.title}: {heading}"
        )

    return {
        "predictions_correct.png": grid(shown_correct, "darkgreen", "correct predictions"),
        "predictions_wrong.png": grid(most_confident_wrong, "darkred", "most confident mistakes"),
    }


def _gradcam_panel(scores: Scores, context: FigureContext, rng: np.random.Generator) -> Figure:
    test, classes = context.data.test, context.data.classes
    count = _clipped(
        context.settings.gradcam_samples, len(test.labels), "evaluate.gradcam_samples", scores.notes
    )
    chosen = np.sort(rng.choice(len(test.labels), count, replace=False))
    inputs = next(context.loaded.device_input.batches(test.images[chosen], len(chosen)))
    maps, explained, grid = explain.grad_cam(context.loaded.model, inputs)
    small = torch.nn.functional.interpolate(
        torch.from_numpy(maps)[:, None], size=(32, 32), mode="bilinear", align_corners=False
    )[:, 0].numpy()
    captions = [
        f"true {classes[test.labels[i]]}\ncam {classes[c]}" for i, c in zip(chosen, explained)
    ]
    heading = f"{context.title}: Grad-CAM of the predicted class ({grid[0]}x{grid[1]} feature map)"
    return plots.gradcam_figure(test.images[chosen], small, captions, heading)


def _tsne_panel(scores: Scores, context: FigureContext) -> Figure:
    test, settings, seed = context.data.test, context.settings, context.seed
    count = _clipped(settings.tsne_samples, len(test.labels), "evaluate.tsne_samples", scores.notes)
    chosen = np.sort(np.random.default_rng(seed).choice(len(test.labels), count, replace=False))
    vectors = explain.embeddings(
        context.loaded.model, test.images[chosen], context.loaded.device_input, settings.batch_size
    )
    points, perplexity = explain.tsne_2d(vectors, settings.tsne_perplexity, seed)
    return plots.tsne_figure(
        points,
        test.labels[chosen],
        context.data.classes,
        f"{context.title}: t-SNE of penultimate embeddings "
        f"({count} test images, perplexity {perplexity:.0f})",
    )


def write(
    outputs: Outputs,
    inference: Inference,
    scores: Scores,
    figures: dict[str, Figure],
    data: PreparedData,
) -> None:
    """Figures, DVCLive plot data, predictions, details, and the headline metrics last."""
    for file_name, figure in figures.items():
        save_figure(figure, outputs.figures / file_name)
    _log_dvclive_plots(outputs.live, data, scores)
    write_atomic(
        outputs.predictions,
        lambda temp: _save_predictions(temp, inference.test_logits, scores, data.test.labels),
    )
    write_json(outputs.details, {**scores.details, "notes": scores.notes})
    write_json(outputs.speed, scores.speed)
    write_json(outputs.metrics, scores.headline)


def _save_predictions(path: Path, logits: np.ndarray, scores: Scores, labels: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.savez(
            handle,
            logits=logits,
            probabilities=scores.probabilities,
            scaled=scores.scaled,
            labels=labels,
            temperature=scores.temperature,
        )


def _log_dvclive_plots(directory: Path, data: PreparedData, scores: Scores) -> None:
    """The confusion matrix and the risk-coverage curve as DVC plots, for `dvc plots diff`.
    DVCLive writes them in a scratch folder (its `with` ends it, and its end adds a summary
    file no stage declares); the two plot files then move into place atomically."""
    from dvclive import Live

    classes, curve = data.classes, scores.curve
    predicted = scores.probabilities.argmax(1)
    keep = np.unique(np.linspace(0, len(curve["coverage"]) - 1, RISK_COVERAGE_POINTS).astype(int))
    with tempfile.TemporaryDirectory() as scratch:
        with Live(scratch, dvcyaml=False, save_dvc_exp=False, report=None) as live:
            live.log_sklearn_plot(
                "confusion_matrix",
                [classes[i] for i in data.test.labels],
                [classes[i] for i in predicted],
                name="confusion_matrix.json",
            )
            live.log_plot(
                "risk_coverage",
                [
                    {
                        "coverage": float(curve["coverage"][i]),
                        "accuracy": float(curve["accuracy"][i]),
                    }
                    for i in keep
                ],
                x="coverage",
                y="accuracy",
                template="linear",
                title="Accuracy on the most confident predictions",
            )
        for plot in DVCLIVE_PLOTS:
            copy_file(Path(scratch) / plot, directory / plot)
