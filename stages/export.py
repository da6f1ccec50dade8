"""export: the released model to ONNX, checked against PyTorch on the whole test split and timed.

Reads ``release/model.safetensors`` (compare's choice, with the TTA and temperature its metadata
carries) and writes ``export/model.onnx``: uint8 images (N, 32, 32, 3), N dynamic, in; class
probabilities out; preprocessing, TTA and temperature inside the graph, the checkpoint's
metadata in the file's metadata, and beside it the release's drift reference (for the service).
``metrics/export.json``: top-1 agreement and the largest
probability difference with PyTorch (what ``stages.predict`` computes) over the test split, and
the file's size. ``metrics/export-latency.json``: milliseconds per image at each batch size,
PyTorch eager vs onnxruntime, median and p95 over ``export.latency_runs`` timed runs after
warm-up, both on this machine's CPU with the same thread count (apart from the numbers that
reproduce, as evaluation keeps its images/s apart).
A difference over ``export.tolerance`` stops the stage: a file that predicts otherwise than
the evaluated model is not written.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.common.config.release import ExportParams
from stages.common.data.prepared import load_prepared
from stages.common.plumbing.command import run_stage
from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import write_atomic, write_json
from stages.common.plumbing.output_paths import (
    DRIFT_REFERENCE_NAME,
    EXPORT_LATENCY,
    EXPORT_METRICS,
    ONNX_MODEL,
    RELEASE_CHECKPOINT,
    RELEASE_DRIFT_REFERENCE,
)
from stages.common.plumbing.stage_params import StageParams
from stages.common.release.onnx_export import export_onnx
from stages.common.release.released_model import Released, load_released, onnx_session

log = logging.getLogger("export")
SCRATCH = Path(".dvc/tmp/export")  # DVC's own scratch space: no output, never in git
WARMUP_RUNS = 5
AGREEMENT_BATCH = 256


def batched(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [run(images[i : i + AGREEMENT_BATCH]) for i in range(0, len(images), AGREEMENT_BATCH)]
    )


def per_image_ms(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, runs: int) -> dict:
    """Median and p95 milliseconds per image of ``run(batch)`` over ``runs`` timed calls."""
    for _ in range(WARMUP_RUNS):
        run(batch)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        run(batch)
        seconds.append(time.perf_counter() - started)
    per_image = np.asarray(seconds) * 1000 / len(batch)
    return {
        "median": round(float(np.median(per_image)), 4),
        "p95": round(float(np.percentile(per_image, 95)), 4),
    }


class ExportStageParams(StageParams):
    export: ExportParams


def main(all_params: ExportStageParams) -> None:
    params = all_params.export
    for needed in (RELEASE_CHECKPOINT, RELEASE_DRIFT_REFERENCE):
        if not needed.is_file():
            raise DataError(f"{needed}: not found; `dvc repro compare` makes it")
    released = load_released(RELEASE_CHECKPOINT)
    test = load_prepared().test
    # the ONNX file is made, checked and timed in DVC's scratch folder and moved into place
    # last, with its metrics: a kill -9 or a failed check leaves no stray file among the
    # outputs (a .model.onnx.*.tmp made `dvc status` dirty and `dvc checkout` refuse)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as scratch:
        candidate = Path(scratch) / ONNX_MODEL.name
        started = time.perf_counter()
        export_onnx(released, candidate)
        export_seconds = time.perf_counter() - started
        metrics, latency = check_and_time(released, candidate, test.images, params)
        write_atomic(ONNX_MODEL, lambda temp: shutil.copyfile(candidate, temp))
    # beside the file, as beside the release: the service tests its traffic against it
    reference = ONNX_MODEL.parent / DRIFT_REFERENCE_NAME
    write_atomic(reference, lambda temp: shutil.copyfile(RELEASE_DRIFT_REFERENCE, temp))
    write_json(EXPORT_METRICS, metrics)
    write_json(EXPORT_LATENCY, latency)
    first = params.latency_batches[0]
    timed = latency[f"batch_{first}"]
    log.info(
        "%s (%s) -> %s (%.1f MB, %.0f s): top-1 agreement %.4f, max |dp| %.1e over %d test "
        "images; per image at batch %d: PyTorch %.2f ms, onnxruntime %.2f ms (x%.2f)",
        RELEASE_CHECKPOINT,
        released.info.architecture,
        ONNX_MODEL,
        metrics["onnx_megabytes"],
        export_seconds,
        metrics["top1_agreement"],
        metrics["max_abs_probability_difference"],
        metrics["test_images"],
        first,
        timed["pytorch"]["median"],
        timed["onnxruntime"]["median"],
        timed["onnxruntime_speedup"],
    )


def check_and_time(
    released: Released, onnx_file: Path, images: np.ndarray, params: ExportParams
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ONNX file's agreement with PyTorch over ``images`` (DataError past
    export.tolerance) and both runtimes' latency per image at each of the latency batches."""
    session = onnx_session(onnx_file)

    def onnx_run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {"images": batch})[0]

    reference = batched(released.probabilities, images)
    exported = batched(onnx_run, images)
    difference = float(np.abs(reference - exported).max())
    agreement = float((reference.argmax(1) == exported.argmax(1)).mean())
    if difference > params.tolerance:
        raise DataError(
            f"{ONNX_MODEL}: probabilities differ from PyTorch's by up to {difference:.2e} over "
            f"the test split, more than export.tolerance ({params.tolerance:.0e}); not kept"
        )
    latency: dict[str, Any] = {"threads": torch.get_num_threads()}
    for size in params.latency_batches:
        batch = np.resize(images, (size, *images.shape[1:]))
        eager = per_image_ms(released.probabilities, batch, params.latency_runs)
        onnx = per_image_ms(onnx_run, batch, params.latency_runs)
        latency[f"batch_{size}"] = {
            "pytorch": eager,
            "onnxruntime": onnx,
            "onnxruntime_speedup": round(eager["median"] / onnx["median"], 2),
        }
    metrics = {
        "test_images": len(images),
        "top1_agreement": agreement,
        "max_abs_probability_difference": difference,
        "onnx_megabytes": round(onnx_file.stat().st_size / 2**20, 3),
    }
    return metrics, latency


if __name__ == "__main__":
    run_stage(main, ExportStageParams)
