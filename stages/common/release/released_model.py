"""The released model as one function of uint8 images, for the export stage and the prediction
service: a PyTorch module holding preprocessing, TTA and temperature (what export writes to
ONNX), and the two runtimes serve answers with (PyTorch, onnxruntime)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime
import torch
from pydantic import ValidationError
from torch import nn

from stages.common.models.checkpoint import METADATA_KEY, CheckpointInfo, InferenceSettings
from stages.common.models.inference import LoadedModel, load_model, probabilities, tta_logits
from stages.common.plumbing.errors import DataError

SERVE_BATCH = 256


class Servable(nn.Module):
    """uint8 (N, H, W, 3) images -> float32 class probabilities (N, classes): the model's
    preprocessing, its test-time augmentation and its fitted temperature in one module."""

    def __init__(self, loaded: LoadedModel, settings: InferenceSettings) -> None:
        super().__init__()
        self.model = loaded.model
        self.device_input = loaded.device_input
        self.tta = settings.tta
        self.temperature = settings.temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = self.device_input(images.permute(0, 3, 1, 2))
        logits = tta_logits(self.model, inputs, self.tta)
        return torch.softmax(logits / self.temperature, dim=1)


class Backend(Protocol):
    """What the service needs of a model file."""

    @property
    def path(self) -> Path: ...

    @property
    def info(self) -> CheckpointInfo: ...

    @property
    def settings(self) -> InferenceSettings: ...

    @property
    def runtime(self) -> str: ...

    def probabilities(self, images: np.ndarray) -> np.ndarray: ...


@dataclass
class Released:
    """A checkpoint with the inference settings it carries (a released model's metadata; any
    other checkpoint: no TTA, temperature 1), on the CPU."""

    path: Path
    loaded: LoadedModel
    settings: InferenceSettings
    runtime: str = "pytorch"

    @property
    def info(self) -> CheckpointInfo:
        return self.loaded.info

    @property
    def servable(self) -> Servable:
        return Servable(self.loaded, self.settings).eval()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """What ``stages.predict`` computes for ``images`` (float64)."""
        return probabilities(
            self.loaded, images, SERVE_BATCH, self.settings.tta, self.settings.temperature
        )


def load_released(path: Path) -> Released:
    loaded = load_model(path, torch.device("cpu"))
    return Released(path, loaded, loaded.info.inference or InferenceSettings())


def onnx_session(path: Path) -> onnxruntime.InferenceSession:
    """onnxruntime on the CPU with torch's thread count, so that timings compare like with like."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class Exported:
    """An ONNX file of ``stages.export`` in onnxruntime."""

    path: Path
    session: onnxruntime.InferenceSession
    info: CheckpointInfo
    runtime: str = "onnxruntime"

    @property
    def settings(self) -> InferenceSettings:
        return self.info.inference or InferenceSettings()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"images": images})[0]


def load_exported(path: Path) -> Exported:
    """An ONNX file as `stages.export` writes it, checked at load: its metadata, one uint8
    input ``images`` (N, 32, 32, 3), one output (N, classes). A foreign graph is one line now,
    not a 500 on every request (or "probabilities" of 129 from an output that is none)."""
    try:
        session = onnx_session(path)
    except Exception as error:  # onnxruntime's own exception types are not importable
        raise DataError(f"{path}: not an ONNX model onnxruntime can load ({error})") from None
    stored = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if stored is None:
        raise DataError(f"{path}: no '{METADATA_KEY}' metadata (not written by `stages.export`)")
    try:
        info = CheckpointInfo.model_validate_json(stored)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "the metadata"
        raise DataError(f"{path}: '{METADATA_KEY}' metadata: {where}: {problem['msg']}") from None
    if problem := graph_problem(session, len(info.classes)):
        raise DataError(f"{path}: {problem} (not a graph `stages.export` wrote)")
    return Exported(path, session, info)


def graph_problem(session: onnxruntime.InferenceSession, classes: int) -> str | None:
    """What makes the graph unlike export's: its inputs, outputs, types or shapes."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != ["images"]:
        return f"inputs {[i.name for i in inputs]}, expected one named 'images'"
    if inputs[0].type != "tensor(uint8)" or list(inputs[0].shape[1:]) != [32, 32, 3]:
        return (
            f"input 'images' is {inputs[0].type} {inputs[0].shape}, expected uint8 (N, 32, 32, 3)"
        )
    if len(outputs) != 1:
        return f"{len(outputs)} outputs, expected one (the class probabilities)"
    shape = outputs[0].shape
    if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != classes):
        return f"output shape {shape}, expected (N, {classes}) for its {classes} classes"
    return None


def load_backend(path: Path) -> Backend:
    """An .onnx file in onnxruntime, anything else as a checkpoint in PyTorch."""
    return load_exported(path) if path.suffix == ".onnx" else load_released(path)
