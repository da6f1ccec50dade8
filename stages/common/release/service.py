"""The prediction service's application: its routes, its metrics and its access log. (Its
entry point: stages/serve.py; the models it serves: release/variants.py; what protects it from
hostile clients: release/http_guard.py; drift and the A/B test: stages/common/monitoring/.)

``POST /v1/predict``: multipart form, field ``files``, one or more images (``?top_k=3``) ->
the variant that answered and, per file, a prediction id and the top-k classes and
probabilities, the numbers ``stages.predict`` prints for the same files (same decoding, TTA and
temperature). ``POST /v1/feedback``: ``{"prediction_id", "label"}``, a prediction's true
class. ``GET /v1/ab``: each variant's accuracy on the labels sent back and the test of their
difference; ``GET /v1/drift``: each variant's drift window against its reference;
``GET /metrics``: Prometheus' text format. ``GET|HEAD /healthz``; ``GET /v1/model``: the card of
the model that answers this client; ``/docs``: the OpenAPI page, its assets served from here
(it works offline). Every refusal is JSON ``{"error": ...}`` with its status, and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated, Any

import numpy as np
import swagger_ui_bundle
from fastapi import FastAPI, File, Header, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from stages.common.monitoring.ab_test import (
    VARIANT_HEADER,
    FeedbackLedger,
    FeedbackRefused,
    Router,
    compare_variants,
)
from stages.common.monitoring.metrics import CONTENT_TYPE, ServiceMetrics
from stages.common.release.errors import Refused
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
from stages.common.release.uploads import (
    MAX_FILE_BYTES,
    MAX_FILES,
    check_content,
    decode_upload,
    read_uploads,
)
from stages.common.release.variants import Variant

log = logging.getLogger("serve")
ASSETS = "/docs-assets"
PREDICT = "/v1/predict"
ROUTES = {
    "/healthz",
    "/v1/model",
    PREDICT,
    "/v1/feedback",
    "/v1/ab",
    "/v1/drift",
    "/metrics",
    "/docs",
    "/openapi.json",
}
FEEDBACK_STATUS = {"label": 422, "unknown": 404}
# X-Client-Id: the same client always meets the same A/B variant
ClientId = Annotated[str | None, Header(max_length=256, description="sticky A/B routing")]


class Feedback(BaseModel):
    prediction_id: str = Field(max_length=64, description="from a /v1/predict answer")
    label: str = Field(max_length=64, description="the image's true class")


class Service:
    """What the routes share: the variants, the split between them, the labels sent back,
    the metrics."""

    def __init__(self, variants: list[Variant], split: float) -> None:
        self.variants = {variant.name: variant for variant in variants}
        names = tuple(self.variants)
        self.router = Router(names, split)
        self.classes = variants[0].backend.info.classes
        self.ledger = FeedbackLedger(names, self.classes)
        monitors = {v.name: v.drift for v in variants if v.drift is not None}
        self.metrics = ServiceMetrics(ROUTES, monitors)
        for variant in variants:
            card = variant.card
            self.metrics.model_info.labels(
                variant.name,
                str(card["model"]),
                card["architecture"],
                card["runtime"],
                str(card["version"]),
            ).set(1)
            variant.batcher.on_batch = self.metrics.batch_images.labels(variant.name).observe

    def variant_for(self, client: str | None) -> Variant:
        return self.variants[self.router.choose(client)]

    def observe(self, variant: Variant, images: np.ndarray, probabilities: np.ndarray) -> None:
        """A request's answers into the metrics and the variant's drift window."""
        top = probabilities.argmax(axis=1)
        for index, count in zip(*np.unique(top, return_counts=True), strict=True):
            self.metrics.predicted.labels(variant.name, self.classes[index]).inc(int(count))
        confidence = self.metrics.confidence.labels(variant.name)
        for value in probabilities.max(axis=1):
            confidence.observe(float(value))
        if variant.drift is not None:
            variant.drift.observe(images, probabilities)

    def drift_report(self) -> dict[str, Any]:
        return {
            "variants": {
                name: variant.drift.report()
                if variant.drift is not None
                else {"verdict": "no reference", "note": variant.drift_note}
                for name, variant in self.variants.items()
            }
        }


def error_response(request: Request, status: int, message: str) -> JSONResponse:
    request.scope.setdefault("state", {})["error"] = message
    return JSONResponse({"error": message}, status_code=status)


def access_logged(app: ASGIApp, metrics: ServiceMetrics) -> ASGIApp:
    """``app`` with one log line per request (client, method, path, status, milliseconds, and
    the error said, if any), counted and timed in ``metrics``."""

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
            seconds = time.perf_counter() - started
            route = metrics.route(scope["path"])
            metrics.requests.labels(route, scope["method"], str(status)).inc()
            metrics.latency.labels(route).observe(seconds)
            client = scope.get("client") or ("-", 0)
            error = (scope.get("state") or {}).get("error")
            log.log(
                logging.WARNING if status >= 400 or not status else logging.INFO,
                "%s %s %s %d %.0f ms%s",
                client[0],
                scope["method"],
                scope["path"],
                status,
                seconds * 1000,
                f": {error}" if error else "",
            )

    return logged


def create_app(
    variants: list[Variant],
    split: float = 1.0,
    max_files: int = MAX_FILES,
    max_file_bytes: int = MAX_FILE_BYTES,
    limits: Limits | None = None,
    refusals: RefusalLog | None = None,
) -> ASGIApp:
    """The service as an ASGI application: FastAPI's routes inside the body guard and the
    access log. ``split``: the share of clients the first variant answers."""
    service = Service(variants, split)
    # a multipart body's envelope around its files: boundaries, headers, names
    max_body = max_files * (max_file_bytes + 4096)
    limits = replace(limits or Limits(), max_body=max_body)
    refusals = refusals or RefusalLog(log)
    app = FastAPI(
        title="CIFAR-10 classifier",
        summary="The released model of this repository's DVC pipeline",
        lifespan=_lifespan(service, refusals),
        docs_url=None,  # below, with its assets served from here
    )
    _add_error_handlers(app)
    _add_offline_docs(app)
    _add_model_routes(app, service, max_files, max_file_bytes)
    _add_monitoring_routes(app, service)
    guarded = BodyGuard(_checked_headers(app, max_body, max_files), limits, refusals)
    return access_logged(guarded, service.metrics)


def _lifespan(service: Service, refusals: RefusalLog):
    """The batchers' workers and the refusal log's flusher, running while the app does."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        workers = [asyncio.create_task(v.batcher.run()) for v in service.variants.values()]

        async def flush_refusals() -> None:
            while True:
                await asyncio.sleep(refusals.interval)
                refusals.flush()

        flusher = asyncio.create_task(flush_refusals())
        yield
        for task in [*workers, flusher]:
            task.cancel()
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


def _add_model_routes(app: FastAPI, service: Service, max_files: int, max_file_bytes: int) -> None:
    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model(response: Response, x_client_id: ClientId = None) -> dict[str, Any]:
        variant = service.variant_for(x_client_id)
        response.headers[VARIANT_HEADER] = variant.name
        return {**variant.card, "variant": variant.name}

    @app.post(PREDICT)
    async def predict(
        files: Annotated[list[UploadFile], File(description="one or more images")],
        response: Response,
        top_k: Annotated[int, Query(ge=1)] = 3,
        x_client_id: ClientId = None,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        variant = service.variant_for(x_client_id)
        if len(files) > max_files:
            raise Refused(413, f"{len(files)} files; at most {max_files} per request")
        blobs = await read_uploads(files, max_file_bytes)
        images = np.stack(
            [
                await decode_upload(i, upload, blob)
                for i, (upload, blob) in enumerate(zip(files, blobs, strict=True))
            ]
        )
        in_flight = service.metrics.in_flight.labels(variant.name)
        in_flight.inc(len(images))
        try:
            probabilities = await variant.batcher.probabilities(images)
        finally:
            in_flight.dec(len(images))
        service.observe(variant, images, probabilities)
        names = [upload.filename for upload in files]
        predictions = top_predictions(names, probabilities, service.classes, top_k)
        for prediction, predicted in zip(predictions, probabilities.argmax(axis=1), strict=True):
            prediction["id"] = service.ledger.issue(variant.name, int(predicted))
        response.headers[VARIANT_HEADER] = variant.name
        seconds = time.perf_counter() - started
        service.metrics.predict_latency.labels(variant.name).observe(seconds)
        return {"variant": variant.name, "predictions": predictions}


def _add_monitoring_routes(app: FastAPI, service: Service) -> None:
    @app.post("/v1/feedback")
    async def feedback(label: Feedback) -> dict[str, Any]:
        try:
            variant, correct = service.ledger.record(label.prediction_id, label.label)
        except FeedbackRefused as refusal:
            raise Refused(FEEDBACK_STATUS[refusal.kind], str(refusal)) from None
        service.metrics.feedback.labels(variant, str(correct).lower()).inc()
        return {"variant": variant, "correct": correct}

    @app.get("/v1/ab")
    async def ab() -> dict[str, Any]:
        shares = dict(
            zip(service.router.names, (service.router.first_share, 1 - service.router.first_share))
        )
        return {"split": shares, **compare_variants(service.ledger.tallies)}

    @app.get("/v1/drift")
    async def drift() -> dict[str, Any]:
        return service.drift_report()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)


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
