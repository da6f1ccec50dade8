"""The export stage (ONNX, checked against PyTorch) and the prediction service, as users meet
them: the stage run as DVC runs it, and the real server (uvicorn on a free loopback port)
spoken to over HTTP, its answers compared with ``stages.predict``'s for the same files."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from stages.common.checkpoint import InferenceSettings, ModelCheckpoint
from stages.common.errors import DataError
from stages.common.onnx_export import export_onnx
from stages.common.serving import load_released
from tests import services
from tests.conftest import run_module, stage_environment, update_params
from tests.test_predict import photos as photos

SETTINGS = InferenceSettings(tta="flip", temperature=1.7)


@pytest.fixture(scope="module")
def released_project(tmp_path_factory, trained_template) -> Path:
    """The trained tiny ResNet released with a TTA and a temperature, and exported."""
    project = Path(shutil.copytree(trained_template, tmp_path_factory.mktemp("serve") / "p"))
    model = ModelCheckpoint.load(project / "models/resnet/model.safetensors")
    release = project / "release/model.safetensors"
    release.parent.mkdir()
    ModelCheckpoint(model.info.model_copy(update={"inference": SETTINGS}), model.weights).save(
        release
    )
    update_params(project, export={"latency_runs": 3, "latency_batches": [1, 8]})
    result = run_module(project, "stages.export")
    assert result.returncode == 0, result.stderr
    return project


def test_export_agrees_with_pytorch_and_says_how_fast(released_project):
    metrics = json.loads((released_project / "metrics/export.json").read_text())
    assert metrics["top1_agreement"] == 1.0
    assert metrics["max_abs_probability_difference"] <= 1e-4
    test_split = np.load(released_project / "data/prepared/cifar10.npz")["test_labels"]
    assert metrics["test_images"] == len(test_split)  # the whole test split
    latency = json.loads((released_project / "metrics/export-latency.json").read_text())
    for batch in ("batch_1", "batch_8"):
        timed = latency[batch]
        for runtime in ("pytorch", "onnxruntime"):
            assert 0 < timed[runtime]["median"] <= timed[runtime]["p95"]
    assert metrics["onnx_megabytes"] > 0
    assert not list((released_project / "export").glob("*.data"))  # weights inside the file


def test_the_onnx_file_takes_any_batch_and_predicts_as_pytorch(released_project):
    session = onnxruntime.InferenceSession(str(released_project / "export/model.onnx"))
    released = load_released(released_project / "release/model.safetensors")
    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    for batch in (images[:1], images):
        exported = session.run(None, {"images": batch})[0]
        assert exported.shape == (len(batch), 10)
        np.testing.assert_allclose(exported, released.probabilities(batch), atol=1e-5)
    stored = session.get_modelmeta().custom_metadata_map["cifar10_dvc"]
    assert json.loads(stored)["inference"] == SETTINGS.model_dump()


class NoOnnxOperator(torch.nn.Module):
    """An operator torch's ONNX exporter has no translation for."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.histc(images.float(), bins=10).expand(len(images), 10)


def test_an_architecture_that_cannot_be_exported_is_one_line_naming_the_operator(
    released_project, tmp_path
):
    released = load_released(released_project / "release/model.safetensors")
    released.loaded.model = NoOnnxOperator()
    released.settings = InferenceSettings()
    with pytest.raises(
        DataError, match=r"cannot be exported to ONNX \(operator torch\.ops\.aten\.histc"
    ):
        export_onnx(released, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


@pytest.fixture(scope="module", params=["release/model.safetensors", "export/model.onnx"])
def server(request, released_project) -> Iterator[httpx.Client]:
    """``python -m stages.serve`` on a free loopback port, serving the checkpoint or the ONNX
    file; stopped after."""
    port = services.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.serve", "--model", request.param, "--port", str(port)],
        cwd=released_project,
        env=stage_environment(released_project),
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"

    def why_down() -> str | None:
        return None if process.poll() is None else process.communicate()[1]

    services.wait_until_healthy(base, why_down)
    client = httpx.Client(base_url=base, timeout=60)
    assert client.get("/healthz").json() == {"status": "ok"}
    client.headers["x-model-file"] = request.param
    yield client
    process.terminate()
    process.wait(timeout=30)
    client.close()


def uploads(files: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (path.name, path.read_bytes(), "image/png")) for path in files]


def test_predictions_are_the_numbers_predict_prints(server, released_project, photos):
    files = sorted(photos.rglob("*.png"))
    answer = server.post("/v1/predict", files=uploads(files), params={"top_k": 3})
    assert answer.status_code == 200, answer.text
    served = answer.json()["predictions"]
    result = run_module(
        released_project,
        "stages.predict",
        "release/model.safetensors",
        *map(str, files),
        "--out",
        "p.json",
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads((released_project / "p.json").read_text())
    onnx = server.headers["x-model-file"].endswith(".onnx")
    for mine, theirs in zip(served, printed, strict=True):
        assert mine["file"] == Path(theirs["file"]).name
        assert [top["class"] for top in mine["top"]] == [theirs[f"class_{k}"] for k in (1, 2, 3)]
        expected = [theirs[f"probability_{k}"] for k in (1, 2, 3)]
        got = [top["probability"] for top in mine["top"]]
        # PyTorch: the same computation (float rounding of another batch aside); ONNX: float32
        assert got == pytest.approx(expected, abs=1e-4 if onnx else 1e-6)


def test_concurrent_requests_each_get_their_own_answers(server, photos):
    """Requests that share a forward pass get back their own images' rows."""
    files = sorted(photos.rglob("*.png"))
    alone = [server.post("/v1/predict", files=uploads([f])).json() for f in files]

    async def together() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            answers = await asyncio.gather(
                *(client.post("/v1/predict", files=uploads([f])) for f in files)
            )
            return [a.json() for a in answers]

    for single, shared in zip(alone, asyncio.run(together()), strict=True):
        assert (
            shared["predictions"][0]["top"][0]["class"]
            == single["predictions"][0]["top"][0]["class"]
        )
        assert shared["predictions"][0]["top"][0]["probability"] == pytest.approx(
            single["predictions"][0]["top"][0]["probability"], abs=1e-5
        )


def test_the_model_card(server, released_project):
    card = server.get("/v1/model").json()
    stored = ModelCheckpoint.load(released_project / "release/model.safetensors").info
    assert card["classes"] == stored.classes and card["data_sha256"] == stored.data_sha256
    assert card["inference"] == SETTINGS.model_dump()
    assert card["runtime"] == ("onnxruntime" if card["file"].endswith(".onnx") else "pytorch")
    assert card["architecture"] == stored.architecture
    assert card["metrics"]["export"]["top1_agreement"] == 1.0
    assert card["version"] is None  # no GTO tag on this commit
    assert "/v1/predict" in server.get("/openapi.json").json()["paths"]


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


BAD_REQUESTS = {
    "not an image": (
        {"files": [("files", ("notes.txt", b"just text", "text/plain"))]},
        422,
        "file 0 ('notes.txt'): not a usable image: does not decode",
    ),
    "an empty file": (
        {"files": [("files", ("empty.png", b"", "image/png"))]},
        422,
        "file 0 ('empty.png'): empty",
    ),
    "an empty body": (
        {"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}},
        400,
        "empty body",
    ),
    "too many files": (
        {"files": [("files", (f"{i}.png", png(32, 32), "image/png")) for i in range(33)]},
        413,
        "33 files; at most 32 per request",
    ),
    "a file over the size limit": (
        {"files": [("files", ("big.png", b"\x89PNG" + bytes(1 << 20), "image/png"))]},
        413,
        "file 0 ('big.png'): over 1048576 bytes",
    ),
    "a decompression bomb": (
        {"files": [("files", ("bomb.png", png(6000, 6000), "image/png"))]},
        413,
        "too many pixels (6000x6000, at most 25,000,000)",
    ),
    "a wrong content type": (
        {"json": {"files": ["cat.png"]}},
        415,
        "content type 'application/json': send multipart/form-data",
    ),
    "a missing field": (
        {"files": [("images", ("cat.png", png(32, 32), "image/png"))]},
        422,
        "files: Field required",
    ),
    "a top_k below 1": (
        {"files": [("files", ("cat.png", png(32, 32), "image/png"))], "params": {"top_k": 0}},
        422,
        "top_k: Input should be greater than or equal to 1",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_is_a_json_error_and_the_server_stays_up(server, case):
    request, status, message = BAD_REQUESTS[case]
    answer = server.post("/v1/predict", **request)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    fine = server.post("/v1/predict", files=[("files", ("ok.png", png(40, 30), "image/png"))])
    assert fine.status_code == 200 and len(fine.json()["predictions"]) == 1


def test_a_missing_model_file_is_one_line(released_project):
    result = run_module(released_project, "stages.serve", "--model", "nowhere.onnx")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --model: 'nowhere.onnx' not found (`dvc pull` or `dvc repro` makes "
        "release/model.safetensors; `dvc repro export` the ONNX file)"
    ]


def test_the_load_benchmark_reports_every_request(released_project):
    small = ["--clients", "2", "--seconds", "2", "--burst", "4", "--rounds", "1"]
    served = ["--project", str(released_project), "--model", "export/model.onnx"]
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve_load", *served, *small],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (round_one,) = report["rounds"]
    steady, burst = round_one["steady_2_clients_2s"], round_one["burst_4"]
    assert steady["errors"] == {} and steady["ok"] == steady["requests"] > 0
    assert burst["ok"] == 4 and burst["latency_ms"]["p50"] <= burst["latency_ms"]["p99"]
    assert report["runtime"] == "onnxruntime" and report["server_memory"]["start_mb"] > 0
