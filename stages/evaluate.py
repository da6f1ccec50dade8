"""evaluate <model>: test metrics, calibration, uncertainty and explanations of the best checkpoint.

Outputs: ``metrics/evaluate/<model>.json`` (every number), ``evaluation/<model>/predictions.npz``
(test logits, probabilities and the fitted temperature, for compare), DVCLive's confusion matrix
and risk-coverage plots under ``evaluation/<model>/live/``, and PNGs in ``plots/evaluate/<model>/``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from stages.common import explain, plots
from stages.common import metrics as m
from stages.common.augment import DeviceInput
from stages.common.checkpoint import load_model_checkpoint
from stages.common.cli import run_stage
from stages.common.dataset import MANIFEST_FILE, PreparedData, load_prepared
from stages.common.engine import predict_logits
from stages.common.errors import DataError, ParamsError
from stages.common.io import read_json, save_figure, write_atomic, write_json
from stages.common.layout import evaluation_paths
from stages.common.models import Preprocessing, rebuild_model
from stages.common.params import EvaluateParams, Params

log = logging.getLogger("evaluate")
RISK_COVERAGE_POINTS = 101


def checked_preprocessing(checkpoint: dict, where: Path) -> Preprocessing:
    try:
        preprocessing = Preprocessing(**checkpoint["preprocessing"])
        valid = (
            int(preprocessing.img_size) >= 1
            and len(preprocessing.mean) == len(preprocessing.std) == 3
            and all(s > 0 for s in preprocessing.std)
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise DataError(f"{where}: invalid preprocessing {checkpoint['preprocessing']!r}")
    return preprocessing


def load_checked_model(
    where: Path, data: PreparedData
) -> tuple[torch.nn.Module, dict, Preprocessing]:
    """The checkpoint's model, refusing one trained for other classes or preprocessing."""
    checkpoint = load_model_checkpoint(where)
    if list(checkpoint["classes"]) != data.classes:
        raise DataError(
            f"{where}: trained for classes {list(checkpoint['classes'])} but the prepared data "
            f"has {data.classes}"
        )
    preprocessing = checked_preprocessing(checkpoint, where)
    try:
        model = rebuild_model(checkpoint)
    except Exception as error:
        raise DataError(
            f"{where}: weights do not fit '{checkpoint['arch']}' ({str(error).splitlines()[0]})"
        ) from None
    if checkpoint.get("data_sha256") != data_sha256():
        log.warning("%s was trained on other prepared data than the data evaluated now", where)
    return model, checkpoint, preprocessing


def data_sha256() -> str | None:
    return read_json(MANIFEST_FILE).get("content_sha256") if MANIFEST_FILE.exists() else None


def clipped(requested: int, available: int, key: str, notes: list[str]) -> int:
    if requested > available:
        note = f"{key}={requested} is more than the {available} available; using {available}"
        log.warning(note)
        notes.append(note)
    return min(requested, available)


def evaluate(params: Params, name: str) -> None:
    if name not in params.models:
        raise ParamsError(f"models.{name}: no such model in params.yaml")
    settings: EvaluateParams = params.evaluate
    where = evaluation_paths(name)
    data = load_prepared()
    model, checkpoint, preprocessing = load_checked_model(where["model"], data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    device_input = DeviceInput(preprocessing, device, False)
    test, classes = data.test, data.classes

    started = time.perf_counter()
    test_logits = (
        predict_logits(
            model,
            test.images,
            device_input,
            settings.batch_size,
            flip_tta=settings.tta,
            progress=f"{name} test",
        )
        .double()
        .numpy()
    )
    test_seconds = time.perf_counter() - started
    val_logits = (
        predict_logits(
            model, data.val.images, device_input, settings.batch_size, flip_tta=settings.tta
        )
        .double()
        .numpy()
    )

    probabilities = m.softmax(test_logits)
    results = m.test_metrics(probabilities, test.labels, classes)
    temperature = m.fit_temperature(val_logits, data.val.labels)
    scaled = m.softmax(test_logits, temperature)
    bins = settings.calibration_bins
    tables = {
        "before": m.reliability_bins(probabilities, test.labels, bins),
        "after": m.reliability_bins(scaled, test.labels, bins),
    }
    before = m.calibration_metrics(probabilities, test.labels, bins, tables["before"])
    after = m.calibration_metrics(scaled, test.labels, bins, tables["after"])
    confidence, entropy = probabilities.max(1), m.entropy(probabilities)
    correct = probabilities.argmax(1) == test.labels
    curve = m.risk_coverage(probabilities, test.labels)
    results["calibration"] = {
        **before,
        "temperature": temperature,
        **{f"{k}_scaled": v for k, v in after.items()},
    }
    results["uncertainty"] = {
        "confidence_correct": _mean(confidence[correct]),
        "confidence_wrong": _mean(confidence[~correct]),
        "entropy_correct": _mean(entropy[correct]),
        "entropy_wrong": _mean(entropy[~correct]),
        "aurc": curve["aurc"],
        "accuracy_at_80_coverage": _accuracy_at(curve, 0.8),
        "accuracy_at_50_coverage": _accuracy_at(curve, 0.5),
    }
    results["speed"] = {"test_images_per_second": len(test.labels) / test_seconds}
    results["tta"] = settings.tta
    notes: list[str] = []

    plot_dir = where["plots"]
    matrix = confusion_matrix(test.labels, probabilities.argmax(1), labels=range(len(classes)))
    title = f"{name} ({checkpoint['arch']})"
    figures = {
        "confusion_matrix.png": plots.confusion_figure(matrix, classes, f"{title}: test confusion"),
        "reliability.png": plots.reliability_figure(
            {**before, "table": tables["before"]},
            {**after, "table": tables["after"]},
            temperature,
            f"{title}: reliability on test",
        ),
        "uncertainty.png": plots.uncertainty_figure(
            confidence, entropy, correct, f"{title}: confidence and entropy, correct vs wrong"
        ),
        "risk_coverage.png": plots.risk_coverage_figure(
            {name: curve},
            {name: plots.model_colour(list(params.models).index(name))},
            f"{title}: selective prediction",
        ),
        "per_class.png": plots.per_class_figure(results["per_class"], f"{title}: per-class scores"),
    }
    rng = np.random.default_rng(params.seed)
    figures.update(prediction_grids(test, classes, probabilities, settings, rng, notes, title))
    figures["gradcam.png"] = gradcam_panel(
        model, test, classes, device_input, settings, rng, notes, title
    )
    figures["tsne.png"] = tsne_panel(
        model, test, classes, device_input, settings, params.seed, notes, title
    )
    for file_name, figure in figures.items():
        save_figure(figure, plot_dir / file_name)
    results["notes"] = notes

    log_dvclive_plots(where["live"], test.labels, probabilities.argmax(1), classes, curve)
    write_atomic(
        where["predictions"],
        lambda temp: _save_predictions(
            temp, test_logits, probabilities, scaled, test.labels, temperature
        ),
    )
    write_json(where["metrics"], results)
    log.info(
        "%s: test accuracy %.4f, F1 %.4f, loss %.4f, ECE %.4f -> %.4f (T=%.2f), %.0f img/s",
        name,
        results["accuracy"],
        results["f1_weighted"],
        results["loss"],
        before["ece"],
        after["ece"],
        temperature,
        results["speed"]["test_images_per_second"],
    )


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def _accuracy_at(curve: dict, coverage: float) -> float:
    index = max(int(np.ceil(coverage * len(curve["accuracy"]))) - 1, 0)
    return float(curve["accuracy"][index])


def _save_predictions(path: Path, logits, probabilities, scaled, labels, temperature) -> None:
    with path.open("wb") as handle:
        np.savez(
            handle,
            logits=logits,
            probabilities=probabilities,
            scaled=scaled,
            labels=labels,
            temperature=temperature,
        )


def prediction_grids(test, classes, probabilities, settings, rng, notes, title):
    predictions, confidence = probabilities.argmax(1), probabilities.max(1)
    correct_index = np.flatnonzero(predictions == test.labels)
    wrong_index = np.flatnonzero(predictions != test.labels)
    count = clipped(settings.grid_size, len(correct_index), "evaluate.grid_size (correct)", notes)
    shown_correct = np.sort(rng.choice(correct_index, count, replace=False))
    count = clipped(settings.grid_size, len(wrong_index), "evaluate.grid_size (wrong)", notes)
    most_confident_wrong = wrong_index[np.argsort(-confidence[wrong_index], kind="stable")][:count]

    def grid(indices, colour, heading):
        captions = [
            f"true {classes[test.labels[i]]}\npred {classes[predictions[i]]} {confidence[i]:.0%}"
            for i in indices
        ]
        return plots.prediction_grid(
            test.images[indices], captions, [colour] * len(indices), f"{title}: {heading}"
        )

    return {
        "predictions_correct.png": grid(shown_correct, "darkgreen", "correct predictions"),
        "predictions_wrong.png": grid(most_confident_wrong, "darkred", "most confident mistakes"),
    }


def gradcam_panel(model, test, classes, device_input, settings, rng, notes, title):
    count = clipped(settings.gradcam_samples, len(test.labels), "evaluate.gradcam_samples", notes)
    chosen = np.sort(rng.choice(len(test.labels), count, replace=False))
    inputs = next(device_input.batches(test.images[chosen], len(chosen)))
    maps, explained, grid = explain.grad_cam(model, inputs)
    small = torch.nn.functional.interpolate(
        torch.from_numpy(maps)[:, None], size=(32, 32), mode="bilinear", align_corners=False
    )[:, 0].numpy()
    captions = [
        f"true {classes[test.labels[i]]}\ncam {classes[c]}" for i, c in zip(chosen, explained)
    ]
    heading = f"{title}: Grad-CAM of the predicted class ({grid[0]}x{grid[1]} feature map)"
    return plots.gradcam_figure(test.images[chosen], small, captions, heading)


def tsne_panel(model, test, classes, device_input, settings, seed, notes, title):
    count = clipped(settings.tsne_samples, len(test.labels), "evaluate.tsne_samples", notes)
    chosen = np.sort(np.random.default_rng(seed).choice(len(test.labels), count, replace=False))
    vectors = explain.embeddings(model, test.images[chosen], device_input, settings.batch_size)
    points, perplexity = explain.tsne_2d(vectors, settings.tsne_perplexity, seed)
    return plots.tsne_figure(
        points,
        test.labels[chosen],
        classes,
        f"{title}: t-SNE of penultimate embeddings "
        f"({count} test images, perplexity {perplexity:.0f})",
    )


def log_dvclive_plots(directory: Path, labels, predictions, classes, curve) -> None:
    """The confusion matrix and the risk-coverage curve as DVC plots, for `dvc plots diff`."""
    from dvclive import Live

    live = Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)
    live.log_sklearn_plot(
        "confusion_matrix",
        [classes[i] for i in labels],
        [classes[i] for i in predictions],
        name="confusion_matrix.json",
    )
    keep = np.unique(np.linspace(0, len(curve["coverage"]) - 1, RISK_COVERAGE_POINTS).astype(int))
    live.log_plot(
        "risk_coverage",
        [
            {"coverage": float(curve["coverage"][i]), "accuracy": float(curve["accuracy"][i])}
            for i in keep
        ],
        x="coverage",
        y="accuracy",
        template="linear",
        title="Accuracy on the most confident predictions",
    )


def main(params: Params) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a key of `models` in params.yaml")
    evaluate(params, parser.parse_args().model)


if __name__ == "__main__":
    run_stage(main)
