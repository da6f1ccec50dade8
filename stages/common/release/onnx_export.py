"""Writing a released model to ONNX and opening it with onnxruntime: torch's exporter
(torch.export, opset from onnxscript), a dynamic batch axis, the checkpoint's metadata inside."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import onnx
import torch

from stages.common.models.checkpoint import METADATA_KEY
from stages.common.plumbing.errors import DataError, first_line
from stages.common.release.released_model import Released

log = logging.getLogger(__name__)
for chatty in ("onnx_ir", "onnxscript"):  # a line per folded constant, rule, initializer
    logging.getLogger(chatty).setLevel(logging.WARNING)
MAX_BATCH = 4096
# what torch's exporter names when an operator has no ONNX translation
OPERATOR = re.compile(r"(aten|prims|torch\.ops)[.:][\w.]+")


def export_onnx(released: Released, path: Path) -> None:
    """``released`` as one ONNX file at ``path`` (weights inside, not next to it); an operator
    ONNX cannot express is one DataError line naming it."""
    example = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter
            program = torch.onnx.export(
                released.servable,
                (example,),
                input_names=["images"],
                output_names=["probabilities"],
                dynamic_shapes={"images": {0: batch}},
                dynamo=True,
                optimize=True,
                verbose=False,
            )
    except Exception as error:  # the exporter raises many types; all end the stage alike
        operator = OPERATOR.search(str(error))
        named = f"operator {operator.group(0)}" if operator else first_line(error)
        raise DataError(
            f"{released.path}: '{released.info.arch}' cannot be exported to ONNX ({named})"
        ) from None
    model = program.model_proto
    onnx.helper.set_model_props(model, {METADATA_KEY: released.info.model_dump_json()})
    onnx.save_model(model, str(path), save_as_external_data=False)
