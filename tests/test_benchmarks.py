"""The benchmark scripts stay runnable: tiny settings, the JSON and markdown they promise.
(Their figures are in the README; no test asserts a speed.)"""

from __future__ import annotations

import json
import subprocess
import sys

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
    assert "| input pipeline at 224 px" in out.with_suffix(".md").read_text()


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
