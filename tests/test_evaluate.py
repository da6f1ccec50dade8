"""The evaluate and compare stages on a trained tiny model: outputs and bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import run_module, update_params

PNGS = [
    "confusion_matrix",
    "reliability",
    "uncertainty",
    "risk_coverage",
    "per_class",
    "predictions_correct",
    "predictions_wrong",
    "gradcam",
    "tsne",
]


def keep_models(project: Path, names: list[str]) -> None:
    """Drop every other model from project/params.yaml."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"] = {name: params["models"][name] for name in names}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def evaluate(project: Path, model: str = "resnet"):
    return run_module(project, "stages.evaluate", model)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, trained_template) -> Path:
    project = Path(shutil.copytree(trained_template, tmp_path_factory.mktemp("e") / "p"))
    update_params(project, evaluate={"tsne_samples": 5000, "grid_size": 8})
    result = evaluate(project)
    assert result.returncode == 0, result.stderr
    (project / "stderr.txt").write_text(result.stderr)
    return project


def test_evaluate_writes_every_output(evaluated):
    results = json.loads((evaluated / "metrics/evaluate/resnet.json").read_text())
    assert 0.3 < results["accuracy"] <= 1.0
    assert set(results["per_class"]) == {f"class{k}" for k in range(10)}
    assert results["calibration"]["temperature"] > 0
    assert results["uncertainty"]["confidence_correct"] > results["uncertainty"]["confidence_wrong"]
    assert results["speed"]["test_images_per_second"] > 0
    for name in PNGS:
        assert (evaluated / f"plots/evaluate/resnet/{name}.png").read_bytes()[:4] == b"\x89PNG"
    confusion = json.loads(
        (evaluated / "evaluation/resnet/live/plots/sklearn/confusion_matrix.json").read_text()
    )
    assert len(confusion) == 100 and {"actual", "predicted"} <= set(confusion[0])
    assert confusion[0]["actual"].startswith("class")
    arrays = np.load(evaluated / "evaluation/resnet/predictions.npz")
    np.testing.assert_allclose(arrays["probabilities"].sum(1), 1.0)
    accuracy = (arrays["probabilities"].argmax(1) == arrays["labels"]).mean()
    assert accuracy == pytest.approx(results["accuracy"])


def test_sample_larger_than_test_set_is_clipped_and_said(evaluated):
    note = "evaluate.tsne_samples=5000 is more than the 100 available; using 100"
    assert note in (evaluated / "stderr.txt").read_text()
    assert note in json.loads((evaluated / "metrics/evaluate/resnet.json").read_text())["notes"]


def test_evaluation_is_deterministic(evaluated, tmp_path):
    again = Path(shutil.copytree(evaluated, tmp_path / "again"))
    assert evaluate(again).returncode == 0
    first = json.loads((evaluated / "metrics/evaluate/resnet.json").read_text())
    second = json.loads((again / "metrics/evaluate/resnet.json").read_text())
    first.pop("speed"), second.pop("speed")
    assert first == second


def test_compare_with_one_model_skips_the_ensemble(evaluated, tmp_path):
    project = Path(shutil.copytree(evaluated, tmp_path / "one"))
    keep_models(project, ["resnet"])
    result = run_module(project, "stages.compare")
    assert result.returncode == 0, result.stderr
    assert "the ensemble is skipped: it needs at least two models" in result.stderr
    table = (project / "reports/comparison.md").read_text()
    assert "| **resnet** |" in table and "ensemble |" not in table
    summary = json.loads((project / "metrics/compare.json").read_text())
    assert summary["best_model"] == "resnet" and list(summary["models"]) == ["resnet"]


def test_compare_ensemble_is_the_average_of_two_models(evaluated, tmp_path):
    project = Path(shutil.copytree(evaluated, tmp_path / "two"))
    # a second "model": the same evaluation with shuffled probabilities
    for sub in ("evaluation", "dvclive"):
        shutil.copytree(project / sub / "resnet", project / sub / "vit")
    shutil.copy(project / "metrics/evaluate/resnet.json", project / "metrics/evaluate/vit.json")
    arrays = dict(np.load(project / "evaluation/vit/predictions.npz"))
    rng = np.random.default_rng(0)
    arrays["probabilities"] = rng.dirichlet(np.ones(10), len(arrays["labels"]))
    np.savez(project / "evaluation/vit/predictions.npz", **arrays)
    keep_models(project, ["resnet", "vit"])
    assert run_module(project, "stages.compare").returncode == 0
    summary = json.loads((project / "metrics/compare.json").read_text())
    resnet = np.load(project / "evaluation/resnet/predictions.npz")
    average = (resnet["probabilities"] + arrays["probabilities"]) / 2
    expected = (average.argmax(1) == arrays["labels"]).mean()
    assert summary["models"]["ensemble"]["accuracy"] == pytest.approx(expected)
    assert (project / "plots/compare/comparison.png").exists()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def break_classes(path: Path) -> None:
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["classes"] = [f"other{k}" for k in range(10)]
    torch.save(checkpoint, path)


def break_preprocessing(path: Path) -> None:
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["preprocessing"]["std"] = [0.0, 0.0]
    torch.save(checkpoint, path)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda path: path.unlink(), "models/resnet/model.pt: model checkpoint not found"),
        (
            lambda path: path.write_bytes(b"junk"),
            "models/resnet/model.pt: corrupt model checkpoint",
        ),
        (break_classes, "models/resnet/model.pt: trained for classes ['other0'"),
        (break_preprocessing, "models/resnet/model.pt: invalid preprocessing"),
    ],
)
def test_bad_checkpoint_is_named_and_earlier_results_survive(evaluated, tmp_path, damage, expected):
    project = Path(shutil.copytree(evaluated, tmp_path / "bad"))
    before = digest(project / "metrics/evaluate/resnet.json")
    damage(project / "models/resnet/model.pt")
    result = evaluate(project)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {expected}"), result.stderr[-1500:]
    assert digest(project / "metrics/evaluate/resnet.json") == before
