"""The benchmark scripts stay runnable: tiny settings, the JSON and markdown they promise.
(Their figures are in the README; no test asserts a speed.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from benchmarks import record
from benchmarks.recipes import recipe_model, recipes_project
from stages.common.config.params import load_params
from stages.common.config.training import model_training
from stages.common.plumbing.errors import ParamsError
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
    assert (
        "as evaluate runs them (each cell generated, then predicted)"
        in out.with_suffix(".md").read_text()
    )  # in line: no GPU here


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


def test_recipes_train_and_evaluate_each_recipe_on_one_prepared_data_set(tmp_path, image_tar):
    out = tmp_path / "recipes.json"
    run(
        "benchmarks.recipes",
        *("--preset", "transfer_gpu", "--quick", "--data", str(image_tar)),
        # the preset's recipe (TrivialAugment, CutMix/MixUp, EMA, flip TTA) on a tiny net
        *("-S", "models.lite0.arch=test_efficientnet", "-S", "models.lite0.pretrained=false"),
        *("-S", "models.lite0.img_size=32"),
        *("--recipe", "base", "--recipe", "plain", "train.ema_decay=null", "img_size=48"),
        *("--out", str(out)),
    )
    report = json.loads(out.read_text())
    assert list(report["recipes"]) == ["base", "plain"]
    assert report["recipes"]["plain"]["changes"] == ["train.ema_decay=null", "img_size=48"]
    for result in report["recipes"].values():
        assert 0 <= result["test_accuracy"] <= 1 and result["train_minutes"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| base | the preset's |" in table and "`img_size=48`" in table


def test_each_recipe_is_the_presets_model_with_its_own_changes(tmp_path, image_tar):
    recipes = {"base": [], "ema": ["train.ema_decay=0.999", "train.augment.strategy=none"]}
    project = recipes_project(
        tmp_path, str(image_tar), "transfer_gpu", ["models.lite0.img_size=64"], recipes, None
    )
    params = load_params(project / "params.yaml")
    assert set(params.models) == {"base", "ema"}
    base, ema = (model_training(params.train, params.models[name]) for name in ("base", "ema"))
    assert params.models["ema"].img_size == params.models["base"].img_size == 64
    assert (base.ema_decay, base.augment.strategy) == (0.9995, "trivialaugment")
    assert (ema.ema_decay, ema.augment.strategy) == (0.999, "none")
    assert ema.augment.cutmix == base.augment.cutmix == 1.0  # the rest as the preset has it
    raw = yaml.safe_load((project / "params.yaml").read_text())
    assert raw["models"]["ema"]["train"] == {"ema_decay": 0.999, "augment": {"strategy": "none"}}


@pytest.mark.parametrize(
    ("model", "recipe", "message"),
    [
        ("nope", [], "--model nope: not in preset transfer_gpu (models: lite0)"),
        (None, ["train.ema_decay"], "recipe change 'train.ema_decay': expected KEY=VALUE"),
        (None, ["train.no_such_key=1"], "no_such_key"),
    ],
)
def test_a_bad_recipe_is_named(tmp_path, image_tar, model, recipe, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        recipes_project(tmp_path, str(image_tar), "transfer_gpu", [], {"bad": recipe}, model)


def test_a_recipe_change_sets_a_nested_key_without_touching_the_base():
    base = {"arch": "a", "train": {"lr": 0.1}}
    assert recipe_model(base, ["train.augment.mixup=0.2", "img_size=96"]) == {
        "arch": "a",
        "train": {"lr": 0.1, "augment": {"mixup": 0.2}},
        "img_size": 96,
    }
    assert base == {"arch": "a", "train": {"lr": 0.1}}
