"""compare: every model's evaluation side by side, a soft-voting ensemble, and the best model.

The students of `distill` are compared as models are, and each also beside its teacher and its
baseline (its net trained without a teacher). Outputs: ``metrics/compare.json`` (the best model,
the ensemble's headline numbers, each student's gain over its baseline),
``reports/comparison.md`` and ``reports/comparison.json`` (the whole table),
``plots/compare/*.png``, and ``release/model.safetensors``: the best single model's checkpoint
with the TTA and temperature its evaluation used, the model registry's artifact (dvc.yaml
`artifacts`). When the ensemble scores best, the report and the log say which single model
was released instead, and why.
"""

from __future__ import annotations

import logging

from stages.common.config.evaluation import CompareParams, EvaluateParams
from stages.common.config.training import DistillParams, check_distill
from stages.common.evaluation.comparison import (
    Lesson,
    compare_models,
    markdown_table,
    save_figures,
)
from stages.common.plumbing.command import run_stage
from stages.common.plumbing.files import write_json, write_text
from stages.common.plumbing.output_paths import (
    COMPARE_DETAILS,
    COMPARE_METRICS,
    COMPARE_REPORT,
    RELEASE_CHECKPOINT,
)
from stages.common.plumbing.stage_params import NamedModels, NamedStudents, StageParams
from stages.common.release.publish import release

log = logging.getLogger("compare")


class CompareStageParams(StageParams):
    """Of `models`, compare reads the names (each model's results are its evaluation's); of
    `distill`, the names and who taught whom."""

    models: NamedModels[object]
    distill: NamedStudents[DistillParams]
    evaluate: EvaluateParams
    compare: CompareParams

    def check(self) -> None:
        check_distill(self.distill, self.models)


def main(params: CompareStageParams) -> None:
    metric = params.compare.metric
    lessons = [Lesson(name, entry.teacher, entry.student) for name, entry in params.distill.items()]
    comparison = compare_models(
        [*params.models, *params.distill], metric, params.evaluate.calibration_bins, lessons
    )
    for note in comparison.notes:
        log.warning(note)
    robustness = save_figures(comparison)
    released = comparison.best_single
    settings = release(released.name, released.details)
    write_json(COMPARE_METRICS, comparison.headline)
    write_json(
        COMPARE_DETAILS,
        {
            "metric": metric,
            "released_model": released.name,
            "released_inference": settings.model_dump(),
            "rows": comparison.rows,
            "notes": comparison.notes,
            "distill": comparison.lessons,
        },
    )
    best = comparison.best
    report = markdown_table(
        comparison.rows, best["model"], metric, comparison.notes, robustness, comparison.lessons
    )
    write_text(COMPARE_REPORT, report)
    log.info(
        "best by %s: %s (%.4f); released %s -> %s (TTA %s, temperature %.2f)",
        metric,
        best["model"],
        best[metric],
        released.name,
        RELEASE_CHECKPOINT,
        settings.tta,
        settings.temperature,
    )


if __name__ == "__main__":
    run_stage(main, CompareStageParams)
