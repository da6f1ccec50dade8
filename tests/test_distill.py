"""Knowledge distillation: the loss, the teacher in the training loop, the distill stage, its
place beside the models in evaluate and compare, and in DVC's graph."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stages.common.models.checkpoint import ModelCheckpoint
from stages.common.preflight.cost_estimate import generated_run
from stages.common.training.distillation import TrainingLoss
from stages.common.training.trainer import Trainer
from tests.conftest import (
    copy_project,
    offline_data,
    run_module,
    shipped,
    tiny_training_params,
    update_params,
)
from tests.test_dvc_pipeline import dvc, init_repo, keep_models, tiny
from tests.test_training import kill_after_first_epoch

STUDENT = {"teacher": "resnet", "student": "efficientnet", "temperature": 2.0, "alpha": 0.8}


def logits_and_labels(seed: int = 0, batch: int = 16, classes: int = 10):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=generator, requires_grad=True)
    teacher = 3 * torch.randn(batch, classes, generator=generator)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return student, teacher, labels


def test_at_t1_alpha1_the_loss_is_cross_entropy_against_the_teachers_probabilities():
    """Less the teacher's entropy, a constant for the student: the same gradients."""
    student, teacher, labels = logits_and_labels()
    loss = TrainingLoss(label_smoothing=0.1, temperature=1.0, alpha=1.0)(student, labels, teacher)
    probabilities = F.softmax(teacher, dim=1)
    entropy = -(probabilities * probabilities.log()).sum(1).mean()
    cross_entropy = F.cross_entropy(student, probabilities)
    torch.testing.assert_close(loss, cross_entropy - entropy)
    ours, theirs = (torch.autograd.grad(value, student)[0] for value in (loss, cross_entropy))
    torch.testing.assert_close(ours, theirs)


def test_the_loss_mixes_the_teacher_at_temperature_with_the_labels():
    student, teacher, labels = logits_and_labels(1)
    loss = TrainingLoss(label_smoothing=0.1, temperature=4.0, alpha=0.3)(student, labels, teacher)
    probabilities = F.softmax(teacher / 4, dim=1)
    log_ratio = probabilities.log() - F.log_softmax(student / 4, dim=1)
    soft = (probabilities * log_ratio).sum(1).mean() * 16
    hard = F.cross_entropy(student, labels, label_smoothing=0.1)
    torch.testing.assert_close(loss, 0.3 * soft + 0.7 * hard)
    # T^2 keeps the soft part's gradients in scale: at a high temperature they approach
    # (student - teacher) / (classes x batch), whatever T is (Hinton et al., section 2.1)
    student, teacher = student.detach().double().requires_grad_(), teacher.double()
    for temperature in (1e3, 1e4):
        soft_only = TrainingLoss(0.0, temperature=temperature, alpha=1.0)
        (gradient,) = torch.autograd.grad(soft_only(student, labels, teacher), student)
        centred = (student - student.mean(1, keepdim=True)) - (teacher - teacher.mean(1, True))
        torch.testing.assert_close(gradient, centred.detach() / (10 * 16), rtol=0.05, atol=2e-5)


def test_a_student_that_matches_its_teacher_has_no_soft_loss_left():
    _student, teacher, labels = logits_and_labels(4)
    matched = TrainingLoss(0.0, temperature=20.0, alpha=1.0)(teacher.clone(), labels, teacher)
    torch.testing.assert_close(matched, torch.tensor(0.0), atol=1e-5, rtol=0)


def test_alpha_0_is_the_labels_alone_and_needs_no_teacher():
    student, _teacher, labels = logits_and_labels(2)
    loss = TrainingLoss(label_smoothing=0.2, temperature=3.0, alpha=0.0)(student, labels)
    torch.testing.assert_close(loss, F.cross_entropy(student, labels, label_smoothing=0.2))
    with pytest.raises(ValueError, match="teacher's logits"):
        TrainingLoss(0.0, alpha=0.5)(student, labels)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_a_teacher_that_knows_the_labels_teaches_the_labels(alpha):
    student, _teacher, labels = logits_and_labels(3)
    one_hot = 1e4 * F.one_hot(labels, 10).float()  # softmax: exactly 0 and 1 in float32
    loss = TrainingLoss(label_smoothing=0.0, temperature=1.0, alpha=alpha)(student, labels, one_hot)
    torch.testing.assert_close(loss, F.cross_entropy(student, labels))


class LabelTeacher:
    """A teacher whose answer is the true label of each training image it is shown (looked
    up by the image's pixels), as one-hot logits."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.labels = {image.numpy().tobytes(): int(label) for image, label in zip(images, labels)}

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        images = pixels.round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        labels = torch.tensor([self.labels[image.numpy().tobytes()] for image in images])
        return 1e4 * F.one_hot(labels, 10).float()


def test_a_teacher_equal_to_the_labels_reproduces_plain_training():
    """The whole loop: the same seed, a teacher answering with the labels, the weights equal
    to plain training's after two epochs (no augmentation, so that the teacher can recognise
    the images; no label smoothing, which the labels-as-teacher would not repeat)."""
    params = shipped(
        **tiny_training_params(
            epochs=2, label_smoothing=0.0, augment={"strategy": "none", "cutmix": 0.0}
        )
    )
    plain = generated_run(params, "resnet", 96)
    plain_result = Trainer(plain).fit()
    taught = generated_run(params, "resnet", 96)
    data = taught.data.train
    teacher = LabelTeacher(torch.from_numpy(data.images), torch.from_numpy(data.labels))
    loss = TrainingLoss(label_smoothing=0.0, temperature=1.0, alpha=0.7)
    taught_result = Trainer(replace(taught, teacher=teacher, loss=loss)).fit()  # type: ignore[arg-type]
    assert plain_result.best_state is not None and taught_result.best_state is not None
    for key, tensor in plain_result.best_state.items():
        torch.testing.assert_close(taught_result.best_state[key], tensor, rtol=1e-5, atol=1e-6)
    assert [h["val/loss"] for h in taught_result.history] == pytest.approx(
        [h["val/loss"] for h in plain_result.history], rel=1e-5
    )


def with_student(project: Path, **entry) -> Path:
    update_params(project, distill={"kd": {**STUDENT, **entry}})
    return project


def test_the_distill_stage_trains_a_student_that_evaluate_and_compare_treat_as_a_model(
    trained_project,
):
    project = with_student(trained_project)
    keep_models(project, ["resnet", "efficientnet"])
    for module, *args in (
        ("stages.train", "efficientnet"),
        ("stages.distill", "kd"),
        ("stages.evaluate", "resnet"),
        ("stages.evaluate", "efficientnet"),
        ("stages.evaluate", "kd"),
    ):
        result = run_module(project, module, *args)
        assert result.returncode == 0, result.stderr
    result = run_module(project, "stages.compare")
    assert result.returncode == 0, result.stderr

    checkpoint = ModelCheckpoint.load(project / "models/kd/model.safetensors")
    assert checkpoint.info.name == "kd" and checkpoint.info.arch == "test_efficientnet"
    recorded = checkpoint.info.params["distill"]
    assert recorded["teacher"] == "resnet" and recorded["alpha"] == 0.8
    assert len(recorded["teacher_sha256"]) == 64
    assert (project / "dvclive/kd/plots/metrics/train/loss.tsv").is_file()
    assert json.loads((project / "metrics/train/kd.json").read_text())["best_epoch"] >= 1

    details = json.loads((project / "reports/comparison.json").read_text())
    assert [row["model"] for row in details["rows"]] == ["resnet", "efficientnet", "kd", "ensemble"]
    (lesson,) = details["distill"]
    accuracy = {row["model"]: row["accuracy"] for row in details["rows"]}
    assert lesson["student_value"] == accuracy["kd"]
    assert lesson["gain_over_baseline"] == pytest.approx(accuracy["kd"] - accuracy["efficientnet"])
    assert lesson["gap_to_teacher"] == pytest.approx(accuracy["resnet"] - accuracy["kd"])
    headline = json.loads((project / "metrics/compare.json").read_text())
    assert headline["distill"]["kd"]["gain_over_baseline"] == lesson["gain_over_baseline"]
    report = (project / "reports/comparison.md").read_text()
    assert "## Distillation" in report and "| kd | resnet | efficientnet |" in report


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"teacher": "nope"}, "distill.kd.teacher: 'nope' is not a key of models"),
        ({"student": "nope"}, "distill.kd.student: 'nope' is not a key of models"),
        ({"alpha": 1.5}, "distill.kd.alpha"),
        ({"temperature": 0}, "distill.kd.temperature"),
        ({"teacher": "vit"}, "models/vit/model.safetensors: the teacher models.vit is not trained"),
    ],
)
def test_bad_distill_params_are_one_line_and_nothing_is_written(trained_project, entry, expected):
    project = with_student(trained_project, **entry)
    result = run_module(project, "stages.distill", "kd")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert expected in lines[-1] and len([line for line in lines if "error" in line]) == 1
    assert not (project / "models/kd").exists()


def test_a_student_may_not_take_a_models_name(trained_project):
    update_params(trained_project, distill={"resnet": STUDENT})
    result = run_module(trained_project, "stages.distill", "resnet")
    assert result.returncode == 2
    assert "distill.resnet: a model of that name exists" in result.stderr


def test_a_killed_student_resumes_and_equals_an_uninterrupted_one(trained_project, tmp_path):
    project = with_student(trained_project, student="resnet")  # resnet teaching a fresh resnet
    update_params(project, train={"epochs": 3})
    uninterrupted = Path(shutil.copytree(project, tmp_path / "uninterrupted"))
    assert run_module(uninterrupted, "stages.distill", "kd").returncode == 0

    kill_after_first_epoch(project, "stages.distill", "kd")
    resumed = run_module(project, "stages.distill", "kd")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoints/kd/resume.safetensors after epoch" in resumed.stderr
    ours = ModelCheckpoint.load(project / "models/kd/model.safetensors").weights
    theirs = ModelCheckpoint.load(uninterrupted / "models/kd/model.safetensors").weights
    for key, tensor in theirs.items():
        torch.testing.assert_close(ours[key], tensor, rtol=0, atol=0)


@pytest.mark.slow
def test_distill_runs_in_the_graph_and_a_new_teacher_reruns_it(tmp_path, image_tar):
    project = copy_project(tmp_path / "repo")
    update_params(project, **offline_data(image_tar))
    repo = init_repo(project, **tiny(distill={"kd": {**STUDENT, "student": "vit"}}))
    keep_models(repo, ["resnet", "vit"])
    run = dvc(repo, "exp", "run")
    for stage in ("train@resnet", "distill@kd", "evaluate_student@kd", "compare", "export"):
        assert f"Running stage '{stage}'" in run.stdout, run.stdout
    assert "Data and pipelines are up to date" in dvc(repo, "repro").stdout
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert "gain_over_baseline" in files["metrics/compare.json"]["data"]["distill"]["kd"]
    assert "accuracy" in files["metrics/evaluate/kd.json"]["data"]

    # the teacher retrained: the student learns again; the baseline (train@vit) does not move
    again = dvc(repo, "exp", "run", "-S", "models.resnet.lr_scale=2")
    assert "Running stage 'train@resnet'" in again.stdout
    assert "Running stage 'distill@kd'" in again.stdout
    assert "Stage 'train@vit' didn't change, skipping" in again.stdout
    # another teacher: the student learns again
    swapped = ("-S", "distill.kd.teacher=vit", "-S", "distill.kd.student=resnet")
    other = dvc(repo, "exp", "run", *swapped)
    assert "Running stage 'distill@kd'" in other.stdout
    assert "Stage 'train@resnet' didn't change, skipping" in other.stdout
