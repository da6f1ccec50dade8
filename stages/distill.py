"""distill <student>: train ``distill.<student>``: the net of its ``student`` model, taught by
its trained ``teacher`` model.

The student trains exactly as train@<student> trains that net (the `train` section with that
model's own overrides of it, the same seed, epochs and augmented batches), except that its
loss mixes the teacher's answers for each batch with the labels
(stages/common/training/distillation.py), so that train@<student> is the same net without a
teacher. Outputs as a train stage's, under the student's own name:
``models/<name>/model.safetensors``, ``metrics/train/<name>.json``, ``dvclive/<name>/``.
Killed, it resumes from its last finished epoch when re-run with the same params, data, code
and teacher. Runs under torchrun as train does.
"""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from stages.common.config.training import (
    DistillParams,
    ModelParams,
    TrainParams,
    check_distill,
    check_training,
    misplaced_training_key,
    model_training,
)
from stages.common.plumbing.command import run_stage
from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.machine import process_group_closed
from stages.common.plumbing.output_paths import paths
from stages.common.plumbing.param_types import Seed
from stages.common.plumbing.stage_params import NamedModels, NamedStudents, StageParams
from stages.common.training.model_training import Distillation, ModelTraining, finished


class DistillStageParams(StageParams):
    seed: Seed
    train: TrainParams
    models: NamedModels[ModelParams]
    distill: NamedStudents[DistillParams]

    def check(self) -> None:
        check_training(self.train, self.models)
        check_distill(self.distill, self.models)

    @classmethod
    def explain(cls, error: ValidationError) -> str:
        return misplaced_training_key(error, cls) or super().explain(error)


def distill(params: DistillStageParams, name: str) -> None:
    if name not in params.distill:
        defined = ", ".join(params.distill) or "none defined"
        raise ParamsError(f"distill.{name}: no such student in params.yaml ({defined})")
    entry = params.distill[name]
    student = params.models[entry.student]
    training = ModelTraining(
        name,
        student,
        model_training(params.train, student),
        params.seed,
        module="stages.distill",
        distillation=Distillation(entry, paths(entry.teacher).checkpoint),
    )
    outcome = training.run()
    if outcome is not None:  # rank 0
        finished(name, outcome[0])


def main(params: DistillStageParams) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student", help="a key of `distill` in params.yaml")
    args = parser.parse_args()
    with process_group_closed():
        distill(params, args.student)


if __name__ == "__main__":
    run_stage(main, DistillStageParams)
