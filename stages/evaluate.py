"""evaluate <model>: test metrics, calibration, uncertainty and explanations of the best checkpoint.

    python -m stages.evaluate resnet                        # the pipeline stage evaluate@resnet
    python -m stages.evaluate --checkpoint PATH [--out DIR] # any checkpoint, outside the pipeline

Outputs: ``metrics/evaluate/<model>.json`` (the headline numbers, a DVC metric),
``evaluation/<model>/details.json`` (per-class scores, calibration, uncertainty),
``metrics/speed/<model>.json`` (images per second: not beside what compare reads, so a
re-run that changes only the timing re-runs nothing after it),
``evaluation/<model>/predictions.npz`` (test logits, probabilities and the fitted temperature,
for compare and predict), DVCLive plot data under ``evaluation/<model>/live/`` and PNGs in
``plots/evaluate/<model>/``. With --checkpoint, all of it goes to one folder.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from stages.common.config.evaluation import EvaluateParams
from stages.common.data.prepared import load_prepared
from stages.common.evaluation import model_evaluation, plots
from stages.common.models.inference import LoadedModel, load_model
from stages.common.plumbing.command import run_stage
from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import read_json
from stages.common.plumbing.output_paths import MANIFEST_FILE, paths
from stages.common.plumbing.param_types import Seed
from stages.common.plumbing.stage_params import (
    NamedModels,
    NamedStudents,
    StageParams,
    model_entry,
)

log = logging.getLogger("evaluate")


class EvaluateStageParams(StageParams):
    """The model's own settings come with its checkpoint; of `models` and `distill`, evaluate
    reads the names (a model's colour is its place among them)."""

    seed: Seed
    evaluate: EvaluateParams
    models: NamedModels[object]
    distill: NamedStudents[object]

    def names(self) -> list[str]:
        """The models, then the students: everything evaluate@ and evaluate_student@ score."""
        return [*self.models, *self.distill]


def evaluate(
    params: EvaluateStageParams,
    checkpoint: Path,
    outputs: model_evaluation.Outputs,
    name: str,
    colour: object,
) -> None:
    data = load_prepared()
    loaded = load_model(checkpoint)
    check_fits(loaded, data.classes, checkpoint)
    inference = model_evaluation.infer(loaded, data, params.evaluate, params.seed, name)
    scores = model_evaluation.score(inference, data, params.evaluate)
    title = f"{name} ({loaded.info.architecture})"
    context = model_evaluation.FigureContext(
        loaded, data, params.evaluate, params.seed, name, title, colour
    )
    figures = model_evaluation.draw(scores, context)
    model_evaluation.write(outputs, inference, scores, figures, data)
    headline = scores.headline
    log.info(
        "%s: test accuracy %.4f, F1 %.4f, loss %.4f, ECE %.4f -> %.4f (T=%.2f), %.0f img/s",
        name,
        headline["accuracy"],
        headline["f1_weighted"],
        headline["loss"],
        headline["ece"],
        headline["ece_scaled"],
        scores.temperature,
        scores.speed["test_images_per_second"],
    )


def check_fits(loaded: LoadedModel, classes: list[str], checkpoint: Path) -> None:
    """Refuse a model trained for other classes; warn if it saw other prepared data."""
    if loaded.classes != classes:
        raise DataError(
            f"{checkpoint}: trained for classes {loaded.classes} but the prepared data has "
            f"{classes}"
        )
    if MANIFEST_FILE.exists() and loaded.info.data_sha256 != read_json(MANIFEST_FILE).get(
        "content_sha256"
    ):
        log.warning("%s was trained on other prepared data than the data evaluated now", checkpoint)


def main(params: EvaluateStageParams) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("model", nargs="?", help="a key of `models` or `distill` in params.yaml")
    target.add_argument("--checkpoint", type=Path, help="a model.safetensors of this project")
    parser.add_argument(
        "--out", type=Path, help="with --checkpoint: the output folder (default: beside it)"
    )
    args = parser.parse_args()
    if args.model:
        names = params.names()
        model_entry(dict.fromkeys(names), args.model)  # a one-line error for an unknown name
        colour = plots.model_colour(names.index(args.model))
        where = paths(args.model)
        outputs = model_evaluation.Outputs.of_model(where)
        evaluate(params, where.checkpoint, outputs, args.model, colour)
    else:
        folder = args.out or args.checkpoint.parent / f"evaluation-{args.checkpoint.stem}"
        outputs = model_evaluation.Outputs.in_folder(folder)
        evaluate(params, args.checkpoint, outputs, args.checkpoint.stem, plots.model_colour(0))
        log.info("wrote %s", folder)


if __name__ == "__main__":
    run_stage(main, EvaluateStageParams)
