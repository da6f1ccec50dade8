"""The evaluate and compare stages on a trained tiny model: outputs and bad input."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stages.common.models.checkpoint import (
    METADATA_KEY,
    CheckpointInfo,
    ModelCheckpoint,
    Preprocessing,
)
from stages.common.monitoring.drift import DriftReference, image_features
from stages.common.plumbing.tensor_files import load_tensors, save_tensors
from stages.common.release.released_model import load_released
from tests import synthetic
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
    "robustness",
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
    headline = json.loads((evaluated / "metrics/evaluate/resnet.json").read_text())
    assert set(headline) == {"accuracy", "f1_weighted", "loss", "ece", "ece_scaled"} | {
        "mca",  # robustness: tiny_training_params' two corruptions at two severities
        "mca_drop",
    }
    results = json.loads((evaluated / "evaluation/resnet/details.json").read_text())
    assert 0.3 < results["accuracy"] == headline["accuracy"] <= 1.0
    assert set(results["per_class"]) == set(synthetic.CLASSES)
    assert results["calibration"]["temperature"] > 0
    assert results["uncertainty"]["confidence_correct"] > results["uncertainty"]["confidence_wrong"]
    assert "speed" not in results  # apart from what compare reads
    speed = json.loads((evaluated / "metrics/speed/resnet.json").read_text())
    assert speed["test_images_per_second"] > 0 and speed["robustness_seconds"] > 0
    robustness = results["robustness"]
    assert robustness["images"] == 20 and robustness["mca"] == headline["mca"]
    assert robustness["accuracy"].keys() == {"gaussian_noise", "contrast"}
    assert all(row.keys() == {"1", "5"} for row in robustness["accuracy"].values())
    for name in PNGS:
        assert (evaluated / f"plots/evaluate/resnet/{name}.png").read_bytes()[:4] == b"\x89PNG"
    confusion = json.loads(
        (evaluated / "evaluation/resnet/live/plots/sklearn/confusion_matrix.json").read_text()
    )
    assert len(confusion) == 100 and {"actual", "predicted"} <= set(confusion[0])
    assert confusion[0]["actual"] in synthetic.CLASSES
    arrays = np.load(evaluated / "evaluation/resnet/predictions.npz")
    np.testing.assert_allclose(arrays["probabilities"].sum(1), 1.0)
    accuracy = (arrays["probabilities"].argmax(1) == arrays["labels"]).mean()
    assert accuracy == pytest.approx(results["accuracy"])


def test_sample_larger_than_test_set_is_clipped_and_said(evaluated):
    note = "evaluate.tsne_samples=5000 is more than the 100 available; using 100"
    assert note in (evaluated / "stderr.txt").read_text()
    assert note in json.loads((evaluated / "evaluation/resnet/details.json").read_text())["notes"]


def test_evaluation_is_deterministic(evaluated, tmp_path):
    again = Path(shutil.copytree(evaluated, tmp_path / "again"))
    assert evaluate(again).returncode == 0
    for name in ("metrics/evaluate/resnet.json", "evaluation/resnet/details.json"):
        first = json.loads((evaluated / name).read_text())
        second = json.loads((again / name).read_text())
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
    assert summary == {"best_model": "resnet", "best_value": summary["best_value"]}
    details = json.loads((project / "reports/comparison.json").read_text())
    assert details["released_model"] == "resnet"
    # the released file is the model, carrying the TTA and temperature it was scored with
    released = ModelCheckpoint.load(project / "release/model.safetensors")
    model = ModelCheckpoint.load(project / "models/resnet/model.safetensors")
    assert released.weights.keys() == model.weights.keys()
    assert all(torch.equal(released.weights[k], model.weights[k]) for k in model.weights)
    evaluation = json.loads((project / "evaluation/resnet/details.json").read_text())
    assert released.info.inference is not None and model.info.inference is None
    assert released.info.inference.tta == evaluation["tta"]
    assert released.info.inference.temperature == evaluation["calibration"]["temperature"]
    assert released.info.model_copy(update={"inference": None}) == model.info
    assert details["released_inference"] == released.info.inference.model_dump()


def test_compare_ensemble_is_the_average_of_two_models(evaluated, tmp_path):
    project = Path(shutil.copytree(evaluated, tmp_path / "two"))
    # a second "model": the same evaluation with shuffled probabilities
    for sub in ("evaluation", "dvclive", "models"):
        shutil.copytree(project / sub / "resnet", project / sub / "vit")
    for sub in ("evaluate", "train"):
        shutil.copy(project / f"metrics/{sub}/resnet.json", project / f"metrics/{sub}/vit.json")
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
    assert summary["ensemble_accuracy"] == pytest.approx(expected)
    table = json.loads((project / "reports/comparison.json").read_text())["rows"]
    assert [row["model"] for row in table] == ["resnet", "vit", "ensemble"]
    headline = json.loads((project / "metrics/evaluate/resnet.json").read_text())
    assert [row["mca"] for row in table] == [headline["mca"], headline["mca"], None]
    assert "| mCA | mCA drop |" in (project / "reports/comparison.md").read_text()
    for name in ("comparison", "risk_coverage", "training", "robustness"):
        assert (project / f"plots/compare/{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_picks_the_sturdiest_model_by_mca_and_needs_it_measured(evaluated, tmp_path):
    project = Path(shutil.copytree(evaluated, tmp_path / "mca"))
    keep_models(project, ["resnet"])
    update_params(project, compare={"metric": "mca"})
    assert run_module(project, "stages.compare").returncode == 0
    summary = json.loads((project / "metrics/compare.json").read_text())
    headline = json.loads((project / "metrics/evaluate/resnet.json").read_text())
    assert summary == {"best_model": "resnet", "best_value": headline["mca"]}
    update_params(project, evaluate={"robustness": {"enabled": False}})
    assert evaluate(project).returncode == 0
    assert "mca" not in json.loads((project / "metrics/evaluate/resnet.json").read_text())
    result = run_module(project, "stages.compare")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: compare.metric=mca: a model was evaluated without robustness; set "
        "evaluate.robustness.enabled=true"
    )
    update_params(project, compare={"metric": "accuracy"})
    assert run_module(project, "stages.compare").returncode == 0
    assert not (project / "plots/compare/robustness.png").exists()
    table = (project / "reports/comparison.md").read_text()
    assert "mCA" not in table and "robustness.png" not in table


def test_when_the_ensemble_wins_compare_says_which_single_model_it_released(evaluated, tmp_path):
    """Each model right on half the images, confidently, and unsure on the other half: alone
    each scores 0.5, their average 1.0. release/ still holds one model, and says so."""
    project = Path(shutil.copytree(evaluated, tmp_path / "ensemble"))
    for sub in ("evaluation", "dvclive", "models"):
        shutil.copytree(project / sub / "resnet", project / sub / "vit")
    labels = np.load(project / "evaluation/resnet/predictions.npz")["labels"]
    half = np.arange(len(labels)) < len(labels) // 2
    for name, confident in (("resnet", half), ("vit", ~half)):
        probabilities = np.full((len(labels), 10), 0.001)
        wrong = (labels + 1) % 10
        rows = np.arange(len(labels))
        probabilities[rows, labels] = np.where(confident, 0.99, 0.44)
        probabilities[rows, wrong] = np.where(confident, 0.002, 0.55)
        probabilities /= probabilities.sum(1, keepdims=True)
        arrays = dict(np.load(project / "evaluation/resnet/predictions.npz"))
        arrays["probabilities"] = probabilities
        np.savez(project / f"evaluation/{name}/predictions.npz", **arrays)
        accuracy = float((probabilities.argmax(1) == labels).mean())
        headline = json.loads((project / "metrics/evaluate/resnet.json").read_text())
        (project / f"metrics/evaluate/{name}.json").write_text(
            json.dumps({**headline, "accuracy": accuracy})
        )
    shutil.copy(project / "metrics/train/resnet.json", project / "metrics/train/vit.json")
    keep_models(project, ["resnet", "vit"])
    result = run_module(project, "stages.compare")
    assert result.returncode == 0, result.stderr
    summary = json.loads((project / "metrics/compare.json").read_text())
    assert summary["best_model"] == "ensemble" and summary["best_value"] == pytest.approx(1.0)
    expected = "the ensemble scores best by accuracy (1.0000), but release/ holds one model"
    assert expected in result.stderr
    assert expected in (project / "reports/comparison.md").read_text()
    details = json.loads((project / "reports/comparison.json").read_text())
    assert details["released_model"] == "resnet"  # the first of the single models tied at 0.5
    assert f"{expected}, the best single one: resnet (0.5000)" in " ".join(details["notes"])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rewrite_metadata(path: Path, change) -> None:
    weights, metadata = load_tensors(path)
    info = json.loads(metadata[METADATA_KEY])
    change(info)
    save_tensors(path, weights, {METADATA_KEY: json.dumps(info)})


def crafted_pickle(path: Path) -> None:
    """A pickle, named like the model, that runs a command if anything unpickles it."""
    path.write_bytes(pickle.dumps(synthetic.CommandPayload(path.parent / "pwned")))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda path: path.unlink(), "models/resnet/model.safetensors: model checkpoint not found"),
        (
            crafted_pickle,
            "models/resnet/model.safetensors: not a safetensors file (looks like a pickle); "
            "refusing to load it",
        ),
        (
            lambda path: path.write_bytes(path.read_bytes()[:-100]),
            "models/resnet/model.safetensors: damaged",
        ),
        (
            lambda path: rewrite_metadata(path, lambda i: i.update(classes=["x"] * 10)),
            "models/resnet/model.safetensors: trained for classes ['x'",
        ),
        (
            lambda path: rewrite_metadata(path, lambda i: i["preprocessing"].update(std=[0, 0, 0])),
            "models/resnet/model.safetensors: invalid metadata at 'preprocessing.std.0'",
        ),
        (
            lambda path: rewrite_metadata(path, lambda i: i.update(arch="test_vit")),
            "models/resnet/model.safetensors: weights do not fit 'test_vit'",
        ),
    ],
)
def test_bad_checkpoint_is_named_and_earlier_results_survive(evaluated, tmp_path, damage, expected):
    project = Path(shutil.copytree(evaluated, tmp_path / "bad"))
    before = digest(project / "metrics/evaluate/resnet.json")
    damage(project / "models/resnet/model.safetensors")
    result = evaluate(project)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {expected}"), result.stderr[-1500:]
    assert "Traceback" not in result.stderr
    assert digest(project / "metrics/evaluate/resnet.json") == before
    assert not (project / "models/resnet/pwned").exists()  # nothing was unpickled


def test_any_checkpoint_path_evaluates_into_its_own_folder(evaluated, tmp_path):
    project = Path(shutil.copytree(evaluated, tmp_path / "adhoc"))
    copy = tmp_path / "elsewhere" / "candidate.safetensors"
    copy.parent.mkdir()
    shutil.copy(project / "models/resnet/model.safetensors", copy)
    result = run_module(project, "stages.evaluate", "--checkpoint", str(copy), "--out", "out")
    assert result.returncode == 0, result.stderr
    ours = json.loads((project / "out/metrics.json").read_text())
    assert ours == json.loads((project / "metrics/evaluate/resnet.json").read_text())
    assert (project / "out/plots/confusion_matrix.png").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_predictions_stop_compare_with_one_line(evaluated, tmp_path, damage):
    project = Path(shutil.copytree(evaluated, tmp_path / "d"))
    keep_models(project, ["resnet"])
    path = project / "evaluation/resnet/predictions.npz"
    blob = path.read_bytes()
    middle = len(blob) // 2
    path.write_bytes(
        blob[:middle] if damage == "truncate" else blob[:middle] + b"\xff" + blob[middle + 1 :]
    )
    result = run_module(project, "stages.compare")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: evaluation/resnet/predictions.npz: damaged predictions")
    assert "dvc checkout" in last


@pytest.mark.parametrize(
    ("pretrained", "title"),
    [
        (True, "vit_base_patch16_224.augreg_in21k"),
        ("/weights/vit.safetensors", "vit_base_patch16_224.augreg_in21k"),
        (False, "vit_base_patch16_224"),
    ],
)
def test_figure_titles_name_the_pretrained_tag_only_for_pretrained_weights(pretrained, title):
    info = CheckpointInfo(
        arch="vit_base_patch16_224.augreg_in21k",
        classes=list(synthetic.CLASSES),
        preprocessing=Preprocessing(img_size=32, mean=(0.5,) * 3, std=(0.5,) * 3),
        params={"model": {"pretrained": pretrained}},
    )
    assert info.architecture == title


def test_compare_stores_the_released_model_s_drift_reference_beside_it(evaluated, tmp_path):
    """What the service tests live traffic against: the test split as the released file
    serves it (its TTA and temperature), one row per test image."""
    project = Path(shutil.copytree(evaluated, tmp_path / "reference"))
    keep_models(project, ["resnet"])
    result = run_module(project, "stages.compare")
    assert result.returncode == 0, result.stderr
    reference = DriftReference.load(project / "release/drift_reference.json")
    test_images = np.load(project / "data/prepared/cifar10.npz")["test_images"]
    served = load_released(project / "release/model.safetensors").probabilities(test_images)
    assert reference.images == len(test_images)
    assert reference.classes == synthetic.CLASSES
    assert reference.class_counts == np.bincount(served.argmax(1), minlength=10).tolist()
    np.testing.assert_allclose(reference.features["confidence"], served.max(1), atol=2e-5)
    np.testing.assert_allclose(
        reference.features["brightness"], image_features(test_images)[:, 6], atol=1e-5
    )
