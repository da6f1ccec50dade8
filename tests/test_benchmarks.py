"""The benchmark scripts stay runnable: tiny settings, the JSON and markdown they promise.
(Their figures are in the README; no test asserts a speed.)"""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks import record
from tests.conftest import ROOT


def run(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_throughput_writes_json_and_markdown(tmp_path):
    out = tmp_path / "throughput.json"
    run(
        "benchmarks.throughput",
        *("--images", "64", "--workers", "1", "--batch", "16", "--arch", "test_resnet"),
        *("--out", str(out)),
    )
    result = json.loads(out.read_text())
    assert result["input_pipeline_224px"]["ours_images_per_second"] > 0
    assert result["training_loop_32px"]["bare_images_per_second"] > 0
    rates = result["strategies_224px"]["images_per_second"]
    assert set(rates) == {"none", "standard", "aggressive", "randaugment", "trivialaugment"}
    assert all(value > 0 for value in rates.values())
    assert "| input pipeline at 224 px" in out.with_suffix(".md").read_text()
    assert "| trivialaugment |" in out.with_suffix(".md").read_text()


def test_gpu_script_quick_mode_runs_every_part_but_the_accuracy_runs(tmp_path):
    out = tmp_path / "gpu.json"
    run("benchmarks.gpu", "--quick", "--out", str(out))
    report = json.loads(out.read_text())
    assert {row["arch"] for row in report["models"]} == {
        "test_resnet",
        "test_efficientnet",
        "test_vit",
    }
    assert report["trainer_vs_bare_loop"]["ours_images_per_second"] > 0
    assert "Device:" in out.with_suffix(".md").read_text()


def test_robustness_cost_writes_json_and_markdown(tmp_path):
    out = tmp_path / "robustness.json"
    run(
        "benchmarks.robustness",
        *("--arch", "test_resnet", "--images", "8", "--tta", "flip", "--out", str(out)),
    )
    result = json.loads(out.read_text())
    assert len(result["generation_seconds"]) == 15 and result["total_seconds"] > 0
    assert "**added to evaluate**" in out.with_suffix(".md").read_text()


def test_record_benchmark_runs_ours_profiles_an_epoch_and_says_why_no_peer_ran(tmp_path, image_tar):
    out, logs = tmp_path / "record.json", tmp_path / "logs"
    run(
        "benchmarks.record",
        *("--data", str(image_tar), "--quick", "--profile", "--logs", str(logs)),
        *("--variant", "train.epochs=1", "--out", str(out)),
    )
    report = json.loads(out.read_text())
    first, variant = report["ours"]
    assert len(first["epoch_seconds"]) == 2 and len(variant["epoch_seconds"]) == 1
    assert variant["changes"][-1] == "train.epochs=1"
    assert 0 <= first["test_accuracy"] <= 1 and first["steady_seconds"] > 0
    assert report["profile"] and "aten::" in " ".join(row["name"] for row in report["profile"])
    assert (logs / "epoch.trace.json").is_file() and "one epoch" in (logs / "epoch.txt").read_text()
    if "peer_skipped" in report:  # a CPU machine, or no ../shared/reference
        assert report["peer_skipped"]


def test_the_peers_printed_results_are_read_from_its_eval_rows():
    printed = "\n".join(
        [
            "|  run   |  epoch  |  train_acc  |  val_acc  |  tta_val_acc  |  time_seconds  |",
            "| warmup |      0  |     0.1000  |   0.1000  |               |        9.0000  |",
            "|        |   eval  |     0.1000  |   0.1000  |       0.1000  |       10.0000  |",
            "|      0 |      7  |     0.9300  |   0.9000  |               |        1.5000  |",
            "|        |   eval  |     0.9300  |   0.9000  |       0.9080  |        1.6500  |",
            "Mean: 0.9080    Std: nan",
        ]
    )
    assert record.peer_results(printed) == [(0.1, 10.0), (0.908, 1.65)]
