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
from torch import nn

from stages.common.checkpoint import METADATA_KEY, CheckpointInfo, InferenceSettings
from stages.common.errors import DataError
from stages.common.inference import LoadedModel, load_model, probabilities, tta_logits

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
    try:
        session = onnx_session(path)
    except Exception as error:  # onnxruntime's own exception types are not importable
        raise DataError(f"{path}: not an ONNX model onnxruntime can load ({error})") from None
    stored = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if stored is None:
        raise DataError(f"{path}: no '{METADATA_KEY}' metadata (not written by `stages.export`)")
    return Exported(path, session, CheckpointInfo.model_validate_json(stored))


def load_backend(path: Path) -> Backend:
    """An .onnx file in onnxruntime, anything else as a checkpoint in PyTorch."""
    return load_exported(path) if path.suffix == ".onnx" else load_released(path)
