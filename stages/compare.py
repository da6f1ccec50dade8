"""compare: every model's evaluation side by side, a soft-voting ensemble, and the best model.

Outputs: ``metrics/compare.json`` (the best model, the ensemble's headline numbers),
``reports/comparison.md`` and ``reports/comparison.json`` (the whole table),
``plots/compare/*.png``, and ``release/model.safetensors``: the best single model's checkpoint
with the TTA and temperature its evaluation used, the model registry's artifact (dvc.yaml
`artifacts`). When the ensemble scores best, the report and the log say which single model
was released instead, and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.common.config.evaluation import CompareParams, EvaluateParams
from stages.common.evaluation import metrics as m
from stages.common.evaluation import plots
from stages.common.models.checkpoint import InferenceSettings, ModelCheckpoint
from stages.common.plumbing.command import run_stage
from stages.common.plumbing.errors import DataError, first_line
from stages.common.plumbing.files import NPZ_ERRORS, read_json, save_figure, write_json, write_text
from stages.common.plumbing.output_paths import (
    COMPARE_DETAILS,
    COMPARE_METRICS,
    COMPARE_PLOTS,
    COMPARE_REPORT,
    RELEASE_CHECKPOINT,
    paths,
)
from stages.common.plumbing.stage_params import NamedModels, StageParams

log = logging.getLogger("compare")
ENSEMBLE = "ensemble"
LOWER_IS_BETTER = {"loss", "ece"}
ROBUSTNESS_FIGURE = COMPARE_PLOTS / "robustness.png"


@dataclass
class ModelResult:
    """What compare reads of one model (or computes for the ensemble)."""

    name: str
    evaluation: dict[str, float]  # the headline numbers of evaluate
    training: dict[str, Any]  # the headline numbers of train (empty for the ensemble)
    probabilities: np.ndarray
    labels: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)  # evaluate's details.json

    @property
    def robustness(self) -> dict[str, Any] | None:
        """Evaluate's robustness table, when it measured one."""
        return self.details.get("robustness")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    value: Callable[[ModelResult], Any]


COLUMNS = [
    Column("accuracy", "accuracy", lambda r: r.evaluation["accuracy"]),
    Column("f1_weighted", "F1 (weighted)", lambda r: r.evaluation["f1_weighted"]),
    Column("loss", "loss (NLL)", lambda r: r.evaluation["loss"]),
    Column("ece", "ECE", lambda r: r.evaluation["ece"]),
    Column("ece_scaled", "ECE after T", lambda r: r.evaluation["ece_scaled"]),
    Column("mca", "mCA", lambda r: r.evaluation.get("mca")),
    Column("mca_drop", "mCA drop", lambda r: r.evaluation.get("mca_drop")),
    Column("parameters", "parameters", lambda r: r.training.get("parameters")),
    Column("trainable_parameters", "trainable", lambda r: r.training.get("trainable_parameters")),
    Column("train_minutes", "train time (min)", lambda r: r.training.get("train_minutes")),
    Column("best_epoch", "best epoch", lambda r: r.training.get("best_epoch")),
]
CHART_COLUMNS = ("accuracy", "f1_weighted", "ece", "ece_scaled")
CURVES = ("train/loss", "val/loss", "val/accuracy", "train/lr")


def row(result: ModelResult) -> dict[str, Any]:
    return {"model": result.name, **{column.key: column.value(result) for column in COLUMNS}}


def read_predictions(path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except FileNotFoundError:
        raise DataError(f"{path}: not found (run the evaluate stage first)") from None
    except NPZ_ERRORS as error:
        raise DataError(
            f"{path}: damaged predictions ({first_line(error, limit=80)}); restore them with "
            "`dvc checkout` or re-create them with `dvc repro -f` of its evaluate stage"
        ) from None


def read_model(name: str) -> ModelResult:
    where = paths(name)
    predictions = read_predictions(where.predictions)
    return ModelResult(
        name,
        read_json(where.evaluate_metrics),
        read_json(where.train_metrics),
        predictions["probabilities"],
        predictions["labels"],
        read_json(where.evaluation_details),
    )


def read_curves(live_dir: Path) -> dict[str, list[float]]:
    """Per-epoch values of DVCLive's TSVs (``train/loss`` -> [...]); missing ones are empty."""
    curves = {}
    for key in CURVES:
        tsv = live_dir / "plots" / "metrics" / f"{key}.tsv"
        lines = tsv.read_text().splitlines()[1:] if tsv.is_file() else []
        curves[key] = [float(line.split("\t")[-1]) for line in lines if line]
    return curves


def soft_vote(probabilities: list[np.ndarray]) -> np.ndarray:
    """The ensemble's probabilities: the mean of the models' probabilities."""
    return np.mean(np.stack(probabilities), axis=0)


def ensemble(results: list[ModelResult], bins: int) -> ModelResult:
    labels = results[0].labels
    for result in results:
        if not np.array_equal(result.labels, labels):
            raise DataError(f"{paths(result.name).predictions}: evaluated on other test labels")
    probabilities = soft_vote([result.probabilities for result in results])
    scores = m.test_metrics(probabilities, labels, [str(k) for k in range(probabilities.shape[1])])
    evaluation = {
        "accuracy": scores["accuracy"],
        "f1_weighted": scores["f1_weighted"],
        "loss": scores["loss"],
        "ece": m.calibration_metrics(probabilities, labels, bins)["ece"],
        "ece_scaled": None,
    }
    return ModelResult(ENSEMBLE, evaluation, {}, probabilities, labels)


def best_of(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The best row by ``metric``, among those that have it (the ensemble has no mCA)."""
    sign = 1 if metric in LOWER_IS_BETTER else -1
    return min(
        (entry for entry in rows if entry[metric] is not None),
        key=lambda entry: sign * entry[metric],
    )


def markdown_table(
    rows: list[dict], best: str, metric: str, notes: list[str], robustness: bool
) -> str:
    columns = [c for c in COLUMNS if robustness or c.key not in ("mca", "mca_drop")]
    lines = ["# Model comparison (test split)", ""]
    lines += ["| model | " + " | ".join(column.label for column in columns) + " |"]
    lines += ["|---|" + "---:|" * len(columns)]
    for entry in rows:
        cells = [_cell(entry[column.key]) for column in columns]
        name = f"**{entry['model']}**" if entry["model"] == best else entry["model"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Best by `{metric}`: **{best}**."]
    lines += [f"- {note}" for note in notes]
    lines += ["", "![Comparison](../plots/compare/comparison.png)", ""]
    if robustness:
        lines += [
            "mCA: mean accuracy over the corruptions and severities of `evaluate.robustness`; "
            "mCA drop: (clean - mCA) / clean on the same test images.",
            "",
            "![Robustness](../plots/compare/robustness.png)",
            "",
        ]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value >= 1000):
        return f"{value:,.0f}"
    return f"{value:.4f}"


class CompareStageParams(StageParams):
    """Of `models`, compare reads the names (each model's results are its evaluation's)."""

    models: NamedModels[object]
    evaluate: EvaluateParams
    compare: CompareParams


def main(params: CompareStageParams) -> None:
    names = list(params.models)
    metric = params.compare.metric
    results = [read_model(name) for name in names]
    if metric == "mca" and any(result.robustness is None for result in results):
        raise DataError(
            "compare.metric=mca: a model was evaluated without robustness; set "
            "evaluate.robustness.enabled=true"
        )
    notes = []
    rows = [row(result) for result in results]
    best_single = best_of(rows, metric)["model"]
    if len(results) >= 2:
        rows.append(row(ensemble(results, params.evaluate.calibration_bins)))
    else:
        notes.append("the ensemble is skipped: it needs at least two models")
        log.warning(notes[-1])
    best = best_of(rows, metric)
    colours = {name: plots.model_colour(i) for i, name in enumerate(names)}
    colours[ENSEMBLE] = plots.ENSEMBLE_COLOUR
    labels = {column.key: column.label for column in COLUMNS}
    save_figure(
        plots.comparison_figure(
            rows,
            colours,
            [(key, labels[key]) for key in CHART_COLUMNS],
            "Models on the CIFAR-10 test split",
        ),
        COMPARE_PLOTS / "comparison.png",
    )
    curves = {r.name: m.risk_coverage(r.probabilities, r.labels) for r in results}
    save_figure(
        plots.risk_coverage_figure(curves, colours, "Selective prediction, all models"),
        COMPARE_PLOTS / "risk_coverage.png",
    )
    robustness = {r.name: r.robustness for r in results if r.robustness}
    if robustness:
        save_figure(
            plots.robustness_comparison_figure(
                robustness, colours, "Models under CIFAR-10-C corruptions of the test split"
            ),
            ROBUSTNESS_FIGURE,
        )
    else:
        ROBUSTNESS_FIGURE.unlink(missing_ok=True)
    histories = {name: read_curves(paths(name).live_dir) for name in names}
    save_figure(plots.training_curves_figure(histories, colours), COMPARE_PLOTS / "training.png")
    settings = release(next(result for result in results if result.name == best_single))
    if best["model"] == ENSEMBLE:
        single = next(entry for entry in rows if entry["model"] == best_single)
        notes.append(
            f"the ensemble scores best by {metric} ({best[metric]:.4f}), but release/ holds "
            f"one model, the best single one: {best_single} ({single[metric]:.4f}). The "
            "registry's artifact is a single model file that stages.predict and a service "
            "load; the ensemble averages the models/<m>/ checkpoints' probabilities."
        )
        log.warning(notes[-1])
    ensemble_row = next((entry for entry in rows if entry["model"] == ENSEMBLE), None)
    headline = {"best_model": best["model"], "best_value": best[metric]}
    if ensemble_row:
        headline["ensemble_accuracy"] = ensemble_row["accuracy"]
    write_json(COMPARE_METRICS, headline)
    write_json(
        COMPARE_DETAILS,
        {
            "metric": metric,
            "released_model": best_single,
            "released_inference": settings.model_dump(),
            "rows": rows,
            "notes": notes,
        },
    )
    write_text(COMPARE_REPORT, markdown_table(rows, best["model"], metric, notes, bool(robustness)))
    log.info(
        "best by %s: %s (%.4f); released %s -> %s (TTA %s, temperature %.2f)",
        metric,
        best["model"],
        best[metric],
        best_single,
        RELEASE_CHECKPOINT,
        settings.tta,
        settings.temperature,
    )


def release(result: ModelResult) -> InferenceSettings:
    """The model's checkpoint as release/model.safetensors, carrying the test-time
    augmentation and temperature its evaluation scored it with (so that the released file
    predicts as it was scored, wherever it goes)."""
    where = paths(result.name)
    settings = InferenceSettings.of_details(result.details, where.evaluation_details)
    checkpoint = ModelCheckpoint.load(where.checkpoint)
    info = checkpoint.info.model_copy(update={"inference": settings})
    ModelCheckpoint(info, checkpoint.weights).save(RELEASE_CHECKPOINT)
    return settings


if __name__ == "__main__":
    run_stage(main, CompareStageParams)
