"""The schema of the release section: export."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictInt

from stages.common.plumbing.param_types import Section


class ExportParams(Section):
    tolerance: Annotated[float, Field(gt=0.0)]
    latency_runs: Annotated[StrictInt, Field(ge=1)]
    # at most the ONNX graph's batch axis (stages/common/release/onnx_export.py, MAX_BATCH)
    latency_batches: Annotated[
        list[Annotated[StrictInt, Field(ge=1, le=4096)]], Field(min_length=1)
    ]
