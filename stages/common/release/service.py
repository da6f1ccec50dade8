"""The prediction service's application: routes, the batcher that shares the model, the model
card, the errors it answers with and its access log. (Its entry point: stages/serve.py; what
protects it from hostile clients: stages/common/release/http_guard.py.)

``POST /v1/predict``: multipart form, field ``files``, one or more images (``?top_k=3``) ->
the top-k classes and probabilities of each, the numbers ``stages.predict`` prints for the
same files (same decoding, TTA and temperature). ``GET|HEAD /healthz``; ``GET /v1/model``:
the served model's card; ``/docs``: the OpenAPI page, its assets served from here (it works
offline). Every refusal is JSON ``{"error": ...}`` with its status, and is logged with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import anyio
import numpy as np
import swagger_ui_bundle
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException

from stages.common.data.images import MAX_PIXELS, TOO_MANY_PIXELS, decode_image
from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import read_json
from stages.common.plumbing.output_paths import (
    COMPARE_DETAILS,
    COMPARE_METRICS,
    EXPORT_METRICS,
    ONNX_MODEL,
    RELEASE_CHECKPOINT,
    paths,
)
from stages.common.release.http_guard import (
    ASGIApp,
    BodyGuard,
    Limits,
    Message,
    Receive,
    RefusalLog,
    Scope,
    Send,
)
from stages.common.release.released_model import Backend

log = logging.getLogger("serve")
MAX_FILES = 32
MAX_FILE_BYTES = 1 << 20  # as prepare reads sources: a CIFAR-sized photo is far smaller
MAX_REQUEST_PIXELS = 2 * MAX_PIXELS  # decoded, all of a request's images together
MAX_WAITING = 64  # requests queued for the model before 503
REGISTRY_ARTIFACT = "cifar10-classifier"  # dvc.yaml's artifact, GTO's tag prefix
ASSETS = "/docs-assets"
PREDICT = "/v1/predict"


class Refused(HTTPException):
    """A request this service does not take: an HTTP status and one line saying why."""


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
                        future.set_exception(Refused(500, f"inference failed: {error}"))
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


def _readable(path: Path, notes: list[str]) -> Any:
    """``path``'s JSON, or None with a note saying why it is left out (a damaged file is no
    reason to fail every card)."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (DataError, OSError, ValueError) as error:
        notes.append(f"{path} left out: {error}")
        return None


def model_card(backend: Backend) -> dict[str, Any]:
    """What the served file is and what was measured of it: its own evaluation (by the model
    name it carries), whether it is the released model, and the export's check when it is.
    Made once, at start: a request costs no file reading or git."""
    info = backend.info
    notes: list[str] = []
    released = backend.path.resolve() in {RELEASE_CHECKPOINT.resolve(), ONNX_MODEL.resolve()}
    metrics: dict[str, Any] = {}
    if info.name is None:
        notes.append("the file names no model (made before checkpoints carried it): no metrics")
    elif (evaluation := _readable(paths(info.name).evaluate_metrics, notes)) is not None:
        metrics["evaluate"] = evaluation
    comparison = _readable(COMPARE_METRICS, notes)
    details = _readable(COMPARE_DETAILS, notes)
    if isinstance(comparison, dict):
        metrics["compare"] = {
            "best": comparison.get("best_model"),
            "released_model": details.get("released_model") if isinstance(details, dict) else None,
        }
    if released and (export := _readable(EXPORT_METRICS, notes)) is not None:
        metrics["export"] = export
    return {
        "file": str(backend.path),
        "runtime": backend.runtime,
        "model": info.name,
        "released": released,
        "architecture": info.architecture,
        "classes": info.classes,
        "data_sha256": info.data_sha256,
        "best_epoch": info.best_epoch,
        "preprocessing": info.preprocessing.model_dump(),
        "inference": backend.settings.model_dump(),
        "metrics": metrics,
        "version": registered_version(),
        "notes": notes,
    }


async def read_uploads(files: list[UploadFile], max_bytes: int) -> list[bytes]:
    """Each file's bytes, each within ``max_bytes`` and not empty, and all of them together
    within MAX_REQUEST_PIXELS once decoded (from their headers)."""
    blobs = []
    for index, upload in enumerate(files):
        blob = await upload.read(max_bytes + 1)
        if len(blob) > max_bytes:
            raise Refused(413, f"{_named(index, upload)}: over {max_bytes} bytes")
        if not blob:
            raise Refused(422, f"{_named(index, upload)}: empty")
        blobs.append(blob)
    total = sum(pixels_of(blob) for blob in blobs)
    if total > MAX_REQUEST_PIXELS:
        raise Refused(413, f"{total:,} pixels in all; at most {MAX_REQUEST_PIXELS:,} per request")
    return blobs


async def decode_upload(index: int, upload: UploadFile, blob: bytes) -> np.ndarray:
    """One uploaded file as a (32, 32, 3) uint8 image, decoded as predict decodes files."""
    image, problem = await anyio.to_thread.run_sync(
        lambda: decode_image(blob, convert=True, max_pixels=MAX_PIXELS), limiter=decoders()
    )
    if image is None:
        status = 413 if problem.startswith(TOO_MANY_PIXELS) else 422
        raise Refused(status, f"{_named(index, upload)}: not a usable image: {problem}")
    return image


def _named(index: int, upload: UploadFile) -> str:
    return f"file {index} ('{upload.filename}')"


def pixels_of(blob: bytes) -> int:
    """Width x height from an image's header (0 when it has none: decoding will say)."""
    try:
        with Image.open(io.BytesIO(blob)) as image:
            return image.size[0] * image.size[1]
    except Exception:  # what Pillow raises for a file it cannot open: decoding says why
        return 0


def check_content(request: Request, max_body: int, max_files: int) -> None:
    """A prediction's headers: a size within the cap, a body at all, multipart."""
    kind = request.headers.get("content-type", "")
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if length is not None and length.isdigit() and int(length) > max_body:
        raise Refused(413, f"request of {length} bytes; at most {max_body} ({max_files} files)")
    if length == "0" or (length is None and not chunked):
        raise Refused(400, "empty body: send images as files")
    if not kind.lower().startswith("multipart/form-data"):
        raise Refused(415, f"content type '{kind or 'none'}': send multipart/form-data (files)")


def error_response(request: Request, status: int, message: str) -> JSONResponse:
    request.scope.setdefault("state", {})["error"] = message
    return JSONResponse({"error": message}, status_code=status)


def access_logged(app: ASGIApp) -> ASGIApp:
    """``app`` with one log line per request (client, method, path, status, milliseconds, and
    the error said, if any)."""

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_status)
        finally:
            client = scope.get("client") or ("-", 0)
            error = (scope.get("state") or {}).get("error")
            log.log(
                logging.WARNING if status >= 400 or not status else logging.INFO,
                "%s %s %s %d %.0f ms%s",
                client[0],
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                f": {error}" if error else "",
            )

    return logged


def create_app(
    backend: Backend,
    card: dict[str, Any],
    max_batch: int = 64,
    max_files: int = MAX_FILES,
    max_file_bytes: int = MAX_FILE_BYTES,
    limits: Limits | None = None,
    refusals: RefusalLog | None = None,
) -> ASGIApp:
    """The service as an ASGI application: FastAPI's routes inside the body guard and the
    access log."""
    batcher = Batcher(backend, max_batch, MAX_WAITING)
    # a multipart body's envelope around its files: boundaries, headers, names
    max_body = max_files * (max_file_bytes + 4096)
    limits = replace(limits or Limits(), max_body=max_body)
    refusals = refusals or RefusalLog(log)
    app = FastAPI(
        title="CIFAR-10 classifier",
        summary="The released model of this repository's DVC pipeline",
        lifespan=_lifespan(batcher, refusals),
        docs_url=None,  # below, with its assets served from here
    )
    _add_error_handlers(app)
    _add_offline_docs(app)
    _add_routes(app, backend, card, batcher, max_files, max_file_bytes)
    return access_logged(BodyGuard(_checked_headers(app, max_body, max_files), limits, refusals))


def _lifespan(batcher: Batcher, refusals: RefusalLog):
    """The batcher's worker and the refusal log's flusher, running while the app does."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.create_task(batcher.run())

        async def flush_refusals() -> None:
            while True:
                await asyncio.sleep(refusals.interval)
                refusals.flush()

        flusher = asyncio.create_task(flush_refusals())
        yield
        worker.cancel()
        flusher.cancel()
        refusals.flush()

    return lifespan


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as the documented ``{"error": ...}`` with its status, FastAPI's own too."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return error_response(request, error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"] if part not in ("body", "query"))
        return error_response(request, 422, f"{where}: {first['msg']}")

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(request, 500, f"internal error ({type(error).__name__})")


def _add_offline_docs(app: FastAPI) -> None:
    """/docs with swagger-ui's assets served from here (a CDN is out of reach offline)."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="CIFAR-10 classifier",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )


def _add_routes(
    app: FastAPI,
    backend: Backend,
    card: dict[str, Any],
    batcher: Batcher,
    max_files: int,
    max_file_bytes: int,
) -> None:
    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        return card

    @app.post(PREDICT)
    async def predict(
        files: Annotated[list[UploadFile], File(description="one or more images")],
        top_k: Annotated[int, Query(ge=1)] = 3,
    ) -> dict[str, Any]:
        if len(files) > max_files:
            raise Refused(413, f"{len(files)} files; at most {max_files} per request")
        blobs = await read_uploads(files, max_file_bytes)
        images = [
            await decode_upload(i, upload, blob)
            for i, (upload, blob) in enumerate(zip(files, blobs, strict=True))
        ]
        probabilities = await batcher.probabilities(np.stack(images))
        names = [upload.filename for upload in files]
        return {"predictions": top_predictions(names, probabilities, backend.info.classes, top_k)}


def top_predictions(
    names: list[str | None], probabilities: np.ndarray, classes: list[str], top_k: int
) -> list[dict[str, Any]]:
    """Each file's ``top_k`` classes, most probable first (ties in class order)."""
    predictions = []
    for name, probs in zip(names, probabilities, strict=True):
        best = np.argsort(-probs, kind="stable")[: min(top_k, len(classes))]
        top = [{"class": classes[i], "probability": float(probs[i])} for i in best]
        predictions.append({"file": name, "top": top})
    return predictions


def _checked_headers(app: ASGIApp, max_body: int, max_files: int) -> ASGIApp:
    """``app`` behind what can be refused from a prediction's headers alone, before its body
    is read."""

    async def checked(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PREDICT:
            request = Request(scope)
            try:
                check_content(request, max_body, max_files)
            except Refused as refusal:
                answer = error_response(request, refusal.status_code, str(refusal.detail))
                await answer(scope, receive, send)
                return
        await app(scope, receive, send)

    return checked
