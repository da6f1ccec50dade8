"""Releasing a model: its checkpoint as release/model.safetensors, the model registry's
artifact (dvc.yaml `artifacts`), and beside it the drift reference the service tests live
traffic against."""

from __future__ import annotations

from typing import Any

from stages.common.data.prepared import load_prepared
from stages.common.evaluation.comparison import read_predictions
from stages.common.models.checkpoint import InferenceSettings, ModelCheckpoint
from stages.common.monitoring.drift import reference_of
from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import write_json
from stages.common.plumbing.output_paths import (
    RELEASE_CHECKPOINT,
    RELEASE_DRIFT_REFERENCE,
    paths,
)


def release(name: str, evaluation_details: dict[str, Any]) -> InferenceSettings:
    """Model ``name``'s checkpoint as release/model.safetensors, carrying the test-time
    augmentation and temperature its evaluation scored it with (so that the released file
    predicts as it was scored, wherever it goes), and its drift reference."""
    where = paths(name)
    settings = InferenceSettings.of_details(evaluation_details, where.evaluation_details)
    checkpoint = ModelCheckpoint.load(where.checkpoint)
    info = checkpoint.info.model_copy(update={"inference": settings})
    write_drift_reference(name, info.classes)
    ModelCheckpoint(info, checkpoint.weights).save(RELEASE_CHECKPOINT)
    return settings


def write_drift_reference(name: str, classes: list[str]) -> None:
    """The test split's input features and model ``name``'s confidences and predicted
    classes on it, as the released file serves them (after its TTA and temperature: the
    evaluation's scaled probabilities)."""
    test = load_prepared().test
    predictions = paths(name).predictions
    scaled = read_predictions(predictions)["scaled"]
    if len(scaled) != len(test.images):
        raise DataError(
            f"{predictions}: {len(scaled)} predictions for {len(test.images)} test images; "
            f"`dvc repro evaluate@{name}`"
        )
    write_json(RELEASE_DRIFT_REFERENCE, reference_of(test.images, scaled, classes).model_dump())
