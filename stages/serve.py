"""serve: the released model behind HTTP (FastAPI on uvicorn; a command, not a pipeline stage).

    python -m stages.serve                                  # release/model.safetensors, :8000
    python -m stages.serve --model export/model.onnx --host 0.0.0.0 --port 8000

``POST /v1/predict``: multipart form, field ``files``, one or more images (``?top_k=3``) ->
the top-k classes and probabilities of each, the numbers ``stages.predict`` prints for the
same files (same decoding, TTA and temperature). ``GET /healthz``; ``GET /v1/model``: the
architecture, classes, data hash, inference settings, metrics and registered version;
``/docs``: the OpenAPI page. Requests share the model through one queue: the images of the
requests waiting are classified together (up to ``--max-batch``), so that memory stays flat
under load; a full queue answers 503. Every refusal is JSON ``{"error": ...}`` with its status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
import numpy as np
import uvicorn
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from stages.common.cli import run_command
from stages.common.errors import ParamsError
from stages.common.images import TOO_MANY_PIXELS, decode_image
from stages.common.io import read_json
from stages.common.layout import COMPARE_METRICS, EXPORT_METRICS, RELEASE_CHECKPOINT, paths
from stages.common.serving import Backend, load_backend

log = logging.getLogger("serve")
MAX_FILES = 32
MAX_FILE_BYTES = 1 << 20  # as prepare reads sources: a CIFAR-sized photo is far smaller
MAX_PIXELS = 25_000_000  # a small file that decodes to more is a decompression bomb
MAX_WAITING = 64  # requests queued for the model before 503
REGISTRY_ARTIFACT = "cifar10-classifier"  # dvc.yaml's artifact, GTO's tag prefix


class Refused(Exception):
    """A request this service does not take: an HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Batcher:
    """One model, many requests: waiting requests' images go through the model together (at
    most ``max_batch`` per pass, on one worker thread), and at most ``max_waiting`` wait."""

    def __init__(self, backend: Backend, max_batch: int, max_waiting: int) -> None:
        self.backend = backend
        self.max_batch = max_batch
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = asyncio.Queue(
            max_waiting
        )

    async def probabilities(self, images: np.ndarray) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((images, future))
        except asyncio.QueueFull:
            raise Refused(503, "busy: too many requests waiting; retry shortly") from None
        return await future

    async def run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            count = len(jobs[0][0])
            while not self.queue.empty() and count < self.max_batch:
                jobs.append(self.queue.get_nowait())
                count += len(jobs[-1][0])
            stacked = np.concatenate([images for images, _ in jobs])
            try:
                probabilities = await anyio.to_thread.run_sync(self.backend.probabilities, stacked)
            except Exception as error:  # the requests fail, the service stays up
                log.exception("inference failed")
                for _, future in jobs:
                    if not future.done():  # done: its client went away
                        future.set_exception(error)
                continue
            start = 0
            for images, future in jobs:
                if not future.done():
                    future.set_result(probabilities[start : start + len(images)])
                start += len(images)


@functools.cache
def decoders() -> anyio.CapacityLimiter:
    """Images decode on at most as many threads as there are cores (not anyio's 40): each
    thread would keep a memory arena of its own after a burst."""
    return anyio.CapacityLimiter(os.cpu_count() or 1)


def registered_version() -> str | None:
    """The newest GTO version tag on this commit (``cifar10-classifier@v1.2.0``), if any."""
    try:
        tags = subprocess.run(
            ["git", "tag", "--points-at", "HEAD", "--list", f"{REGISTRY_ARTIFACT}@v*"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    versions = sorted((tag.split("@", 1)[1] for tag in tags), key=version_key)
    return versions[-1] if versions else None


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.lstrip("v").split("."))


def model_card(backend: Backend) -> dict[str, Any]:
    info = backend.info
    metrics: dict[str, Any] = {}
    if COMPARE_METRICS.is_file():
        metrics["compare"] = read_json(COMPARE_METRICS)
        best = metrics["compare"].get("best_model")
        if best and paths(best).evaluate_metrics.is_file():
            metrics["evaluate"] = read_json(paths(best).evaluate_metrics)
    if EXPORT_METRICS.is_file():
        metrics["export"] = read_json(EXPORT_METRICS)
    return {
        "file": str(backend.path),
        "runtime": backend.runtime,
        "architecture": info.architecture,
        "classes": info.classes,
        "data_sha256": info.data_sha256,
        "best_epoch": info.best_epoch,
        "preprocessing": info.preprocessing.model_dump(),
        "inference": backend.settings.model_dump(),
        "metrics": metrics,
        "version": registered_version(),
    }


async def read_upload(index: int, upload: UploadFile, max_bytes: int) -> np.ndarray:
    """One uploaded file as a (32, 32, 3) uint8 image, decoded as predict decodes files."""
    name = f"file {index} ('{upload.filename}')"
    blob = await upload.read(max_bytes + 1)
    if len(blob) > max_bytes:
        raise Refused(413, f"{name}: over {max_bytes} bytes")
    if not blob:
        raise Refused(422, f"{name}: empty")
    image, problem = await anyio.to_thread.run_sync(
        lambda: decode_image(blob, convert=True, max_pixels=MAX_PIXELS), limiter=decoders()
    )
    if image is None:
        status = 413 if problem.startswith(TOO_MANY_PIXELS) else 422
        raise Refused(status, f"{name}: not a usable image: {problem}")
    return image


def create_app(
    backend: Backend,
    max_batch: int = 64,
    max_files: int = MAX_FILES,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> FastAPI:
    batcher = Batcher(backend, max_batch, MAX_WAITING)
    # a multipart body's envelope around its files: boundaries, headers, names
    max_body = max_files * (max_file_bytes + 4096)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(
        title="CIFAR-10 classifier",
        summary="The released model of this repository's DVC pipeline",
        lifespan=lifespan,
    )

    @app.exception_handler(Refused)
    async def refused(_: Request, error: Refused) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        return JSONResponse({"error": f"{where}: {first['msg']}"}, status_code=422)

    @app.middleware("http")
    async def check_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """What can be refused from the headers alone, before the body is read."""
        if request.method == "POST" and request.url.path == "/v1/predict":
            kind = request.headers.get("content-type", "")
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > max_body:
                message = f"request of {length} bytes; at most {max_body} ({max_files} files)"
                return JSONResponse({"error": message}, status_code=413)
            if length == "0":
                return JSONResponse({"error": "empty body: send images as files"}, 400)
            if not kind.startswith("multipart/form-data"):
                message = f"content type '{kind or 'none'}': send multipart/form-data (files)"
                return JSONResponse({"error": message}, status_code=415)
        return await call_next(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        return model_card(backend)

    @app.post("/v1/predict")
    async def predict(
        files: Annotated[list[UploadFile], File(description="one or more images")],
        top_k: Annotated[int, Query(ge=1)] = 3,
    ) -> dict[str, Any]:
        if len(files) > max_files:
            raise Refused(413, f"{len(files)} files; at most {max_files} per request")
        images = [await read_upload(i, upload, max_file_bytes) for i, upload in enumerate(files)]
        probabilities = await batcher.probabilities(np.stack(images))
        top_k = min(top_k, len(backend.info.classes))
        predictions = []
        for upload, probs in zip(files, probabilities):
            best = np.argsort(-probs, kind="stable")[:top_k]
            top = [{"class": backend.info.classes[i], "probability": float(probs[i])} for i in best]
            predictions.append({"file": upload.filename, "top": top})
        return {"predictions": predictions}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=RELEASE_CHECKPOINT,
        help="a .safetensors checkpoint (PyTorch) or an .onnx file of `stages.export`",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=64, help="images per forward pass")
    args = parser.parse_args()
    if args.max_batch < 1:
        raise ParamsError(f"--max-batch: must be 1 or more, got {args.max_batch}")
    if not args.model.is_file():
        raise ParamsError(
            f"--model: '{args.model}' not found (`dvc pull` or `dvc repro` makes "
            f"{RELEASE_CHECKPOINT}; `dvc repro export` the ONNX file)"
        )
    backend = load_backend(args.model)
    log.info(
        "%s (%s, %s) on http://%s:%d (docs at /docs)",
        args.model,
        backend.info.architecture,
        backend.runtime,
        args.host,
        args.port,
    )
    app = create_app(backend, max_batch=args.max_batch)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    run_command(main)
