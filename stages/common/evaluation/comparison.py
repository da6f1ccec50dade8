"""Every model's evaluation side by side: reading what evaluate wrote, a soft-voting ensemble,
the ranking by one metric, the figures and the markdown table (the compare stage's work)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stages.common.evaluation import metrics as m
from stages.common.evaluation import plots
from stages.common.plumbing.errors import DataError, first_line
from stages.common.plumbing.files import NPZ_ERRORS, read_json, save_figure
from stages.common.plumbing.output_paths import COMPARE_PLOTS, paths

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
    rows: list[dict],
    best: str,
    metric: str,
    notes: list[str],
    robustness: bool,
    lessons: list[dict[str, Any]],
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
    lines += lessons_table(lessons)
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


@dataclass
class Comparison:
    """The models' rows (and the ensemble's, with two models or more), ranked by ``metric``."""

    metric: str
    results: list[ModelResult]
    rows: list[dict[str, Any]]
    best: dict[str, Any]  # the best row, the ensemble's possibly
    best_single: ModelResult  # the best single model: what is released
    notes: list[str]
    lessons: list[dict[str, Any]] = field(default_factory=list)  # Lesson.row of each student

    @property
    def ensemble_row(self) -> dict[str, Any] | None:
        return next((entry for entry in self.rows if entry["model"] == ENSEMBLE), None)

    @property
    def headline(self) -> dict[str, Any]:
        """metrics/compare.json: the best model and its value, the ensemble's accuracy."""
        headline: dict[str, Any] = {
            "best_model": self.best["model"],
            "best_value": self.best[self.metric],
        }
        if self.ensemble_row:
            headline["ensemble_accuracy"] = self.ensemble_row["accuracy"]
        if self.lessons:
            headline["distill"] = {
                lesson["student"]: {
                    "gain_over_baseline": lesson["gain_over_baseline"],
                    "gap_to_teacher": lesson["gap_to_teacher"],
                }
                for lesson in self.lessons
            }
        return headline


def compare_models(
    names: list[str], metric: str, calibration_bins: int, lessons: Sequence[Lesson] = ()
) -> Comparison:
    """Read every model's evaluation (``names``: the models and the students), add the
    ensemble and rank them, set each student beside its teacher and baseline; the notes say
    what a reader of the report must know (no ensemble, an ensemble that beats what is
    released)."""
    results = [read_model(name) for name in names]
    if metric == "mca" and any(result.robustness is None for result in results):
        raise DataError(
            "compare.metric=mca: a model was evaluated without robustness; set "
            "evaluate.robustness.enabled=true"
        )
    notes = []
    rows = [row(result) for result in results]
    single = best_of(rows, metric)
    if len(results) >= 2:
        rows.append(row(ensemble(results, calibration_bins)))
    else:
        notes.append("the ensemble is skipped: it needs at least two models")
    best = best_of(rows, metric)
    if best["model"] == ENSEMBLE:
        notes.append(
            f"the ensemble scores best by {metric} ({best[metric]:.4f}), but release/ holds "
            f"one model, the best single one: {single['model']} ({single[metric]:.4f}). The "
            "registry's artifact is a single model file that stages.predict and a service "
            "load; the ensemble averages the models/<m>/ checkpoints' probabilities."
        )
    released = next(result for result in results if result.name == single["model"])
    by_name = {entry["model"]: entry for entry in rows}
    taught = [lesson.row(by_name, metric) for lesson in lessons]
    return Comparison(metric, results, rows, best, released, notes, taught)


@dataclass(frozen=True)
class Lesson:
    """A student of ``distill`` against its teacher and against its net without a teacher."""

    student: str
    teacher: str
    baseline: str  # the `models` key of the student's net: the same training, no teacher

    def row(self, rows: dict[str, dict[str, Any]], metric: str) -> dict[str, Any]:
        """The three models' ``metric`` (and sizes), the student's gain over its baseline and
        its gap to the teacher, in the metric's units (positive: the student is better)."""
        sign = -1 if metric in LOWER_IS_BETTER else 1
        student, teacher, baseline = (rows[name] for name in self.names)
        return {
            "student": self.student,
            "teacher": self.teacher,
            "baseline": self.baseline,
            "metric": metric,
            "student_value": student[metric],
            "teacher_value": teacher[metric],
            "baseline_value": baseline[metric],
            "gain_over_baseline": sign * (student[metric] - baseline[metric]),
            "gap_to_teacher": sign * (teacher[metric] - student[metric]),
            "student_parameters": student["parameters"],
            "teacher_parameters": teacher["parameters"],
        }

    @property
    def names(self) -> tuple[str, str, str]:
        return self.student, self.teacher, self.baseline


def lessons_table(lessons: list[dict[str, Any]]) -> list[str]:
    """The report's distillation section (markdown lines; none without students)."""
    if not lessons:
        return []
    metric = lessons[0]["metric"]
    lines = [
        "## Distillation",
        "",
        f"Each student against its teacher and against the same net trained without a teacher "
        f"(its baseline: the same recipe, seed and epochs), by `{metric}`.",
        "",
        f"| student | teacher | baseline | student {metric} | teacher {metric} "
        f"| baseline {metric} | gain over baseline | gap to teacher "
        "| parameters (student / teacher) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lesson in lessons:
        sizes = f"{_cell(lesson['student_parameters'])} / {_cell(lesson['teacher_parameters'])}"
        values = ("student_value", "teacher_value", "baseline_value")
        lines.append(
            f"| {lesson['student']} | {lesson['teacher']} | {lesson['baseline']} | "
            + " | ".join(_cell(lesson[key]) for key in values)
            + f" | {lesson['gain_over_baseline']:+.4f} | {lesson['gap_to_teacher']:+.4f} "
            f"| {sizes} |"
        )
    return [*lines, ""]


def save_figures(comparison: Comparison) -> bool:
    """plots/compare/: the metrics, selective prediction, training curves and (when evaluate
    measured it) robustness; True when the robustness figure was drawn."""
    names = [result.name for result in comparison.results]
    colours = {name: plots.model_colour(i) for i, name in enumerate(names)}
    colours[ENSEMBLE] = plots.ENSEMBLE_COLOUR
    labels = {column.key: column.label for column in COLUMNS}
    save_figure(
        plots.comparison_figure(
            comparison.rows,
            colours,
            [(key, labels[key]) for key in CHART_COLUMNS],
            "Models on the CIFAR-10 test split",
        ),
        COMPARE_PLOTS / "comparison.png",
    )
    curves = {r.name: m.risk_coverage(r.probabilities, r.labels) for r in comparison.results}
    save_figure(
        plots.risk_coverage_figure(curves, colours, "Selective prediction, all models"),
        COMPARE_PLOTS / "risk_coverage.png",
    )
    robustness = {r.name: r.robustness for r in comparison.results if r.robustness}
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
    students = [lesson["student"] for lesson in comparison.lessons]
    save_figure(
        plots.training_curves_figure(histories, colours, students), COMPARE_PLOTS / "training.png"
    )
    return bool(robustness)
