"""The service watching itself, over HTTP as a team's Prometheus and clients meet it: /metrics
parsed by prometheus-client's own parser, drift quiet on clean traffic and ringing on the
robustness stage's corruptions and on a two-class stream, and an A/B split between two models
that is sticky, labelled and reported per variant with the labels clients send back."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stages.common.evaluation.corruptions import corrupt
from tests import synthetic
from tests.conftest import ROOT, run_process
from tests.test_serve import serving

WINDOW = 100  # the synthetic test split, the reference, has 100 images
# requests of one image each: every shift must ring within a window's worth (measured at
# this synthetic data: 30-60, docs/monitoring.md)
SHIFT_BUDGET = WINDOW


def png(image: np.ndarray) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", ("image.png", synthetic.png_bytes(image), "image/png"))


def clean_images(count: int, seed: int) -> np.ndarray:
    """Unseen images of the test split's distribution (its generator, another seed)."""
    images, _ = synthetic.make_images(-(-count // 10), seed=seed)
    return images[np.random.default_rng(seed).permutation(len(images))][:count]


def scrape(client: httpx.Client) -> dict[str, list]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f.samples for f in text_string_to_metric_families(answer.text)}


def value(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


@pytest.fixture(scope="module")
def monitored(released_project, tmp_path_factory) -> Iterator[httpx.Client]:
    log = tmp_path_factory.mktemp("monitored") / "serve.log"
    args = ["--model", "release/model.safetensors", "--drift-window", str(WINDOW)]
    with serving(released_project, *args, log=log) as client:
        yield client


def send(client: httpx.Client, images: np.ndarray, until_drift: bool = False) -> int:
    """One image per request; the requests sent until /v1/drift said drift (or all)."""
    for sent, image in enumerate(images, start=1):
        assert client.post("/v1/predict", files=[png(image)]).status_code == 200
        if until_drift and client.get("/v1/drift").json()["variants"]["A"]["verdict"] == "drift":
            return sent
    return len(images)


def test_metrics_count_what_was_served(monitored):
    before = scrape(monitored)
    images = clean_images(12, seed=20)
    answer = monitored.post("/v1/predict", files=[png(image) for image in images[:7]])
    assert answer.status_code == 200 and answer.headers["x-model-variant"] == "A"
    send(monitored, images[7:])
    assert monitored.get("/no/such/page").status_code == 404
    after = scrape(monitored)
    requests, total = "cifar10_http_requests", "cifar10_http_requests_total"
    route = {"route": "/v1/predict", "method": "POST", "status": "200"}
    answered = value(after[requests], total, **route) - value(before[requests], total, **route)
    assert answered == 6
    assert value(after[requests], total, route="other", status="404") >= 1
    predicted = value(after["cifar10_predictions"], "cifar10_predictions_total", variant="A")
    assert predicted - value(before["cifar10_predictions"], "cifar10_predictions_total") == 12
    confidence = after["cifar10_prediction_confidence"]
    assert value(confidence, "cifar10_prediction_confidence_count", variant="A") == predicted
    batches = after["cifar10_batch_images"]
    assert value(batches, "cifar10_batch_images_sum", variant="A") >= predicted
    (info,) = after["cifar10_model_info"]
    assert info.labels["variant"] == "A" and info.labels["architecture"] == "test_resnet"
    assert value(after["cifar10_images_in_flight"], "cifar10_images_in_flight") == 0
    assert "cifar10_drift_window_images" in after


@pytest.mark.slow
def test_drift_stays_quiet_on_clean_traffic_and_rings_on_each_shift(monitored):
    """Clean: several windows, no alarm. Then each shift, with clean traffic between them
    to flush the window: the requests each took to ring are in the log (-s) and the docs."""
    send(monitored, clean_images(4 * WINDOW, seed=21))
    quiet = monitored.get("/v1/drift").json()["variants"]["A"]
    assert quiet["verdict"] == "no drift" and quiet["alarms"] == 0, quiet
    assert quiet["checks"] >= 30 and quiet["window"] == {"images": WINDOW, "size": WINDOW}
    images, labels = synthetic.make_images(SHIFT_BUDGET // 2, seed=22)
    two_classes = images[np.isin(labels, [3, 5])]
    clean = clean_images(SHIFT_BUDGET, seed=23)
    shifts = {
        f"{name} {severity}": corrupt(clean, name, severity, 0, range(SHIFT_BUDGET))
        for name in ("fog", "gaussian_noise", "contrast")
        for severity in (3, 5)
    }
    shifts["two classes"] = two_classes[np.random.default_rng(0).permutation(SHIFT_BUDGET)]
    taken = {}
    for seed, (shift, shifted) in enumerate(shifts.items(), start=30):
        send(monitored, clean_images(WINDOW, seed))  # the window clean again
        assert monitored.get("/v1/drift").json()["variants"]["A"]["verdict"] == "no drift"
        taken[shift] = send(monitored, shifted, until_drift=True)
        drift = monitored.get("/v1/drift").json()["variants"]["A"]
        print(shift, taken[shift], {k: v["p_value"] for k, v in drift["features"].items()})
        assert drift["verdict"] == "drift", shift
    print("requests until the alarm:", taken)
    metrics = scrape(monitored)
    assert value(metrics["cifar10_drift_detected"], "cifar10_drift_detected", variant="A") == 1


@pytest.fixture(scope="module")
def split(released_project, tmp_path_factory) -> Iterator[httpx.Client]:
    """Two models, 90% of clients to A: the release in PyTorch and its ONNX export."""
    log = tmp_path_factory.mktemp("ab") / "serve.log"
    args = [
        "--model",
        "A=release/model.safetensors",
        "--model",
        "B=export/model.onnx",
        "--split",
        "0.9",
    ]
    with serving(released_project, *args, log=log) as client:
        yield client


def test_a_client_stays_with_its_variant_and_the_split_holds(split):
    image = clean_images(1, seed=40)[0]
    seen: dict[str, set[str]] = {}
    for client in range(200):
        for _ in range(2):
            answer = split.post(
                "/v1/predict", files=[png(image)], headers={"x-client-id": f"user-{client}"}
            )
            assert answer.headers["x-model-variant"] == answer.json()["variant"]
            seen.setdefault(f"user-{client}", set()).add(answer.json()["variant"])
    assert all(len(variants) == 1 for variants in seen.values())
    shares = Counter(next(iter(variants)) for variants in seen.values())
    assert 160 <= shares["A"] <= 195, shares  # 180 expected, sd 4.2
    card = split.get("/v1/model", headers={"x-client-id": "user-0"}).json()
    assert card["variant"] == next(iter(seen["user-0"]))
    assert card["runtime"] == {"A": "pytorch", "B": "onnxruntime"}[card["variant"]]


def test_feedback_gives_each_variant_its_accuracy_and_a_test(split):
    images, labels = synthetic.make_images(6, seed=41)
    right = Counter()
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        answer = split.post(
            "/v1/predict", files=[png(image)], headers={"x-client-id": f"labeller-{index}"}
        ).json()
        (prediction,) = answer["predictions"]
        truth = synthetic.CLASSES[label]
        told = split.post("/v1/feedback", json={"prediction_id": prediction["id"], "label": truth})
        assert told.status_code == 200
        correct = prediction["top"][0]["class"] == truth
        assert told.json() == {"variant": answer["variant"], "correct": correct}
        right[answer["variant"], correct] += 1
    report = split.get("/v1/ab").json()
    assert report["split"] == {"A": 0.9, "B": pytest.approx(0.1)}
    for variant in ("A", "B"):
        labelled = right[variant, True] + right[variant, False]
        assert report["variants"][variant]["labelled"] == labelled
        assert report["variants"][variant]["correct"] == right[variant, True]
    assert "verdict" in report
    metrics = scrape(split)
    feedback = value(metrics["cifar10_feedback"], "cifar10_feedback_total", correct="true")
    assert feedback == right["A", True] + right["B", True]
    assert {s.labels["variant"] for s in metrics["cifar10_model_info"]} == {"A", "B"}


def test_bad_feedback_is_one_line_each(split):
    answer = split.post("/v1/predict", files=[png(clean_images(1, seed=42)[0])]).json()
    prediction_id = answer["predictions"][0]["id"]
    unknown = split.post("/v1/feedback", json={"prediction_id": "nope", "label": "cat"})
    assert unknown.status_code == 404
    assert unknown.json()["error"].startswith("prediction_id: 'nope' unknown")
    label = split.post("/v1/feedback", json={"prediction_id": prediction_id, "label": "cow"})
    assert label.status_code == 422 and label.json()["error"].startswith("label: 'cow' is not")
    assert split.post("/v1/feedback", json={"label": "cat"}).status_code == 422
    first = split.post("/v1/feedback", json={"prediction_id": prediction_id, "label": "cat"})
    second = split.post("/v1/feedback", json={"prediction_id": prediction_id, "label": "cat"})
    assert first.status_code == 200 and second.status_code == 404


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "a.safetensors"] * 3, "--model: 3 given; at most 2 (A and B)"),
        (
            [
                "--model",
                "release/model.safetensors",
                "--model",
                "export/model.onnx",
                "--split",
                "1",
            ],
            "--split: must be between 0 and 1, got 1",
        ),
        (
            ["--model", "X=release/model.safetensors", "--model", "X=export/model.onnx"],
            "--model X=export/model.onnx: the name must be a new word, like A or candidate",
        ),
        (["--drift-alpha", "2"], "--drift-alpha: must be between 0 and 1, got 2"),
    ],
)
def test_bad_serve_options_are_one_line(released_project, args, message):
    result = run_process(released_project, "stages.serve", *args)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"error: {message}"


def run_benchmark(module: str, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout[result.stdout.index("\n{") :])


def test_the_drift_benchmark_holds_out_half_and_times_each_shift(released_project):
    report = run_benchmark(
        "benchmarks.drift", "--project", str(released_project), "--window", "20", "--rounds", "2"
    )
    assert report["reference_images"] == 50  # half of the 100 test images
    clean = report["clean"]
    assert clean["images"] == 100 and clean["tests"] > 0  # every image, alarms or not
    assert clean["false_alarm_rate_per_test"] == clean["false_alarms"] / clean["tests"]
    shifts = report["images_to_alarm"]
    assert len(shifts) == 10 and "two classes" in shifts and "fog 5" in shifts
    assert shifts["fog 5"] is not None and shifts["fog 5"] <= 50


def test_the_a_b_benchmark_converges_under_load_and_draws_it(released_project, tmp_path):
    figure = tmp_path / "ab.png"
    report = run_benchmark(
        "benchmarks.ab_serve",
        "--project",
        str(released_project),
        "--model",
        "A=release/model.safetensors",
        "--model",
        "B=export/model.onnx",
        "--labels",
        "40",
        "--every",
        "10",
        "--clients",
        "2",
        "--plot",
        str(figure),
    )
    variants = report["final"]["variants"]
    assert sum(variant["labelled"] for variant in variants.values()) >= 40
    assert report["latency_ms"]["p99"] > 0 and figure.stat().st_size > 10_000
