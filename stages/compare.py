"""compare: every model's evaluation side by side, a soft-voting ensemble, and the best model.

Outputs: ``metrics/compare.json``, ``reports/comparison.md`` and ``plots/compare/*.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stages.common import metrics as m
from stages.common import plots
from stages.common.cli import run_stage
from stages.common.errors import DataError
from stages.common.io import read_json, save_figure, write_json, write_text
from stages.common.layout import evaluation_paths, live_dir
from stages.common.params import Params

log = logging.getLogger("compare")
METRICS_FILE = Path("metrics/compare.json")
REPORT_FILE = Path("reports/comparison.md")
PLOTS_DIR = Path("plots/compare")
ENSEMBLE = "ensemble"
LOWER_IS_BETTER = {"loss", "ece"}
COLUMNS = [
    ("accuracy", "accuracy"),
    ("f1_weighted", "F1 (weighted)"),
    ("f1_macro", "F1 (macro)"),
    ("loss", "loss (NLL)"),
    ("ece", "ECE"),
    ("ece_scaled", "ECE after T"),
    ("parameters", "parameters"),
    ("trainable_parameters", "trainable"),
    ("train_seconds", "train time (s)"),
    ("test_images_per_second", "test img/s"),
]


def soft_vote(probabilities: list[np.ndarray]) -> np.ndarray:
    """The ensemble's probabilities: the mean of the models' probabilities."""
    return np.mean(np.stack(probabilities), axis=0)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: unreadable predictions ({error}); re-run evaluate") from None


def model_row(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    where = evaluation_paths(name)
    for key in ("metrics", "predictions"):
        if not where[key].is_file():
            raise DataError(f"{where[key]}: not found (run `dvc repro evaluate@{name}` first)")
    evaluation = read_json(where["metrics"])
    training_file = live_dir(name) / "metrics.json"
    training = read_json(training_file) if training_file.is_file() else {}
    row = {
        "model": name,
        "accuracy": evaluation["accuracy"],
        "f1_weighted": evaluation["f1_weighted"],
        "f1_macro": evaluation["f1_macro"],
        "loss": evaluation["loss"],
        "ece": evaluation["calibration"]["ece"],
        "ece_scaled": evaluation["calibration"]["ece_scaled"],
        "parameters": training.get("parameters"),
        "trainable_parameters": training.get("trainable_parameters_final"),
        "train_seconds": training.get("train_seconds"),
        "test_images_per_second": evaluation["speed"]["test_images_per_second"],
    }
    return row, read_npz(where["predictions"])


def ensemble_row(predictions: dict[str, dict[str, np.ndarray]], bins: int) -> dict:
    labels = next(iter(predictions.values()))["labels"]
    for name, arrays in predictions.items():
        if not np.array_equal(arrays["labels"], labels):
            raise DataError(
                f"{evaluation_paths(name)['predictions']}: evaluated on other test labels"
            )
    probabilities = soft_vote([arrays["probabilities"] for arrays in predictions.values()])
    scaled = soft_vote([arrays["scaled"] for arrays in predictions.values()])
    scores = m.test_metrics(probabilities, labels, [str(k) for k in range(probabilities.shape[1])])
    return {
        "model": ENSEMBLE,
        "accuracy": scores["accuracy"],
        "f1_weighted": scores["f1_weighted"],
        "f1_macro": scores["f1_macro"],
        "loss": m.nll(probabilities, labels),
        "ece": m.calibration_metrics(probabilities, labels, bins)["ece"],
        "ece_scaled": m.calibration_metrics(scaled, labels, bins)["ece"],
        "parameters": None,
        "trainable_parameters": None,
        "train_seconds": None,
        "test_images_per_second": None,
    }


def best_model(rows: list[dict], metric: str) -> dict:
    sign = 1 if metric in LOWER_IS_BETTER else -1
    return min(rows, key=lambda row: sign * row[metric])


def markdown_table(rows: list[dict], best: str, metric: str, notes: list[str]) -> str:
    lines = ["# Model comparison (test split)", ""]
    lines += ["| model | " + " | ".join(label for _, label in COLUMNS) + " |"]
    lines += ["|---|" + "---:|" * len(COLUMNS)]
    for row in rows:
        cells = [_cell(row[key]) for key, _ in COLUMNS]
        name = f"**{row['model']}**" if row["model"] == best else row["model"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Best by `{metric}`: **{best}**."]
    lines += [f"- {note}" for note in notes]
    lines += ["", "![Comparison](../plots/compare/comparison.png)", ""]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value >= 1000):
        return f"{value:,.0f}"
    return f"{value:.4f}"


def main(params: Params) -> None:
    names = list(params.models)
    if not names:
        raise DataError("compare: no models in params.yaml")
    rows, predictions, notes = [], {}, []
    for name in names:
        row, arrays = model_row(name)
        rows.append(row)
        predictions[name] = arrays
    if len(names) >= 2:
        rows.append(ensemble_row(predictions, params.evaluate.calibration_bins))
    else:
        notes.append("the ensemble is skipped: it needs at least two models")
        log.warning(notes[-1])
    metric = params.compare.metric
    best = best_model(rows, metric)
    colours = {name: plots.model_colour(i) for i, name in enumerate(names)}
    colours[ENSEMBLE] = plots.ENSEMBLE_COLOUR
    save_figure(
        plots.comparison_figure(
            rows,
            colours,
            [
                ("accuracy", "test accuracy"),
                ("f1_weighted", "F1 (weighted)"),
                ("ece", "ECE before T"),
                ("ece_scaled", "ECE after T"),
                ("test_images_per_second", "test images/s"),
            ],
            "Models on the CIFAR-10 test split",
        ),
        PLOTS_DIR / "comparison.png",
    )
    curves = {
        name: m.risk_coverage(predictions[name]["probabilities"], predictions[name]["labels"])
        for name in names
    }
    save_figure(
        plots.risk_coverage_figure(curves, colours, "Selective prediction, all models"),
        PLOTS_DIR / "risk_coverage.png",
    )
    write_json(
        METRICS_FILE,
        {
            "models": {
                row["model"]: {k: v for k, v in row.items() if k != "model"} for row in rows
            },
            "best_model": best["model"],
            "best_metric": metric,
            "best_value": best[metric],
            "notes": notes,
        },
    )
    write_text(REPORT_FILE, markdown_table(rows, best["model"], metric, notes))
    log.info("best model by %s: %s (%.4f)", metric, best["model"], best[metric])


if __name__ == "__main__":
    run_stage(main)
