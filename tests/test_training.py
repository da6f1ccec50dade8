"""The train stage end to end on generated data: learning, outputs, resume, DDP, bad input."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from stages.common.models.checkpoint import ModelCheckpoint
from stages.common.preflight.cost_estimate import generated_run
from stages.common.training.optim import build_scheduler
from stages.common.training.resume import load_resume_state
from stages.common.training.trainer import Trainer, TrainingInterrupted
from tests import synthetic
from tests.conftest import (
    run_module,
    shipped,
    stage_environment,
    tiny_training_params,
    update_params,
)

TIMING = {"train/images_per_second", "train_minutes"}


def train(project: Path, model: str = "resnet") -> subprocess.CompletedProcess:
    return run_module(project, "stages.train", model)


def metrics(project: Path, model: str = "resnet") -> dict:
    data = json.loads((project / f"dvclive/{model}/metrics.json").read_text())
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return {k: v for k, v in flat.items() if k not in TIMING}


def history(project: Path, name: str, model: str = "resnet") -> list[tuple[int, float]]:
    lines = (project / f"dvclive/{model}/plots/metrics/{name}.tsv").read_text().split("\n")[1:]
    return [(int(row.split("\t")[0]), float(row.split("\t")[1])) for row in lines if row]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("model", ["resnet", "efficientnet", "vit"])
def test_each_tiny_model_learns_and_writes_its_outputs(ready_project, model):
    update_params(ready_project, train={"epochs": 4})
    result = train(ready_project, model)
    assert result.returncode == 0, result.stderr
    assert f"{model} epoch 4/4: train loss" in result.stderr  # one log line per epoch
    summary = metrics(ready_project, model)
    assert summary["step"] == 4 and summary["epochs_run"] == 4  # epochs count from 1
    assert summary["best_val_accuracy"] > 0.3  # chance is 0.1
    headline = json.loads((ready_project / f"metrics/train/{model}.json").read_text())
    assert set(headline) == {
        "best_epoch",
        "best_val_loss",
        "best_val_accuracy",
        "best_val_f1_weighted",
        "train_minutes",
        "pruned",
        "parameters",
        "trainable_parameters",
    }
    assert headline["best_val_accuracy"] == summary["best_val_accuracy"]
    assert headline["best_epoch"] == summary["best_epoch"] and headline["pruned"] is False
    checkpoint = ModelCheckpoint.load(ready_project / f"models/{model}/model.safetensors")
    assert checkpoint.info.classes[:2] == ["airplane", "automobile"]
    assert checkpoint.info.preprocessing.img_size == 32
    assert checkpoint.info.params["lr"] == pytest.approx(0.001)  # the effective value
    assert [step for step, _ in history(ready_project, "val/loss", model)] == [1, 2, 3, 4]
    for name in ("train/lr", "train/trainable_params", "train/images_per_second"):
        assert len(history(ready_project, name, model)) == 4
    assert not (ready_project / "checkpoints" / model).exists()  # resumable state cleaned up


def test_a_models_own_train_keys_apply_to_it_alone(ready_project):
    update_params(ready_project, models={"resnet": {"train": {"epochs": 1, "lr": 0.002}}})
    result = train(ready_project)
    assert result.returncode == 0, result.stderr
    assert "resnet: test_resnet, lr 0.002 (train.lr 0.002 x lr_scale 1)" in result.stderr
    assert [step for step, _ in history(ready_project, "val/loss")] == [1]  # train.epochs is 2
    recorded = ModelCheckpoint.load(ready_project / "models/resnet/model.safetensors").info.params
    assert recorded["train"]["epochs"] == 1 and recorded["model"]["train"]["epochs"] == 1


def test_same_params_same_metrics(ready_project, tmp_path):
    other = Path(shutil.copytree(ready_project, tmp_path / "again"))
    assert train(ready_project).returncode == 0 and train(other).returncode == 0
    assert metrics(ready_project) == metrics(other)


def test_progressive_freezing_logs_trainable_parameters(ready_project):
    update_params(
        ready_project,
        train={"epochs": 3},
        models={"resnet": {"freezing": {"strategy": "progressive", "schedule": [1, 2]}}},
    )
    assert train(ready_project).returncode == 0
    counts = [value for _, value in history(ready_project, "train/trainable_params")]
    total = sum(p.numel() for p in timm.create_model("test_resnet", num_classes=10).parameters())
    assert counts[0] < counts[1] < counts[2] == total


def test_augmentation_mixing_ema_and_poly_schedule_run(ready_project):
    update_params(
        ready_project,
        train={
            "epochs": 2,
            "scheduler": "poly",
            "warmup_epochs": 0.5,
            "warmup_lr_ratio": 0.2,
            "min_lr_ratio": 0.07,
            "optimizer": "sgd",
            "lr": 0.05,
            "ema_decay": 0.9,
            "augment": {"strategy": "trivialaugment", "cutmix": 1.0, "mixup": 0.2},
        },
    )
    result = train(ready_project)
    assert result.returncode == 0, result.stderr
    assert metrics(ready_project)["epochs_run"] == 2


def test_warm_up_reaches_the_peak_and_hands_over_to_the_decay_without_a_jump():
    train = shipped(
        train={
            "epochs": 6,
            "scheduler": "poly",
            "warmup_epochs": 1.5,
            "warmup_lr_ratio": 0.2,
            "min_lr_ratio": 0.07,
        }
    ).train
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.75)
    scheduler = build_scheduler(optimizer, train, 0.75, steps_per_epoch=10)
    rates = []
    for step in range(60):  # as the Trainer: the lr of step s is set after step s - 1
        rates.append(optimizer.param_groups[0]["lr"])
        scheduler.step_update(step + 1)
    assert rates[0] == pytest.approx(0.15)
    assert max(rates) == pytest.approx(0.75) and rates.index(max(rates)) == 15
    decay_slope = (0.75 - 0.75 * 0.07) / 45
    steps = [after - before for before, after in itertools.pairwise(rates[15:])]
    assert steps == pytest.approx([-decay_slope] * len(steps))


def test_each_epoch_logs_the_rate_it_trained_at_not_the_one_after_it(ready_project):
    """A linear decay to zero ends at 0 after the last step; the epoch trained at more."""
    update_params(
        ready_project,
        train={"epochs": 2, "scheduler": "poly", "min_lr_ratio": 0.0, "lr": 0.01},
    )
    result = train(ready_project)
    assert result.returncode == 0, result.stderr
    rates = [rate for _, rate in history(ready_project, "train/lr")]
    steps = 270 // 32  # tiny_training_params' data: 270 training images, batches of 32
    assert rates == pytest.approx([0.01 * (1 - (steps - 1) / (2 * steps)), 0.01 / (2 * steps)])
    assert "lr 0.00e+00" not in result.stderr


def test_a_warm_up_longer_than_half_the_run_is_capped_and_said(ready_project):
    """`bash run.sh 1` on the defaults: one warm-up epoch of a one-epoch run."""
    update_params(ready_project, train={"epochs": 1, "warmup_epochs": 1.0, "scheduler": "cosine"})
    result = train(ready_project)
    assert result.returncode == 0, result.stderr
    assert "resnet: warm-up of 0.5 epochs (train.warmup_epochs=1, capped at half the run)" in (
        result.stderr
    )
    params = shipped(train={"epochs": 1, "warmup_epochs": 1.0, "warmup_lr_ratio": 0.0}).train
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(optimizer, params, 0.1, steps_per_epoch=10)
    rates = []
    for step in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        scheduler.step_update(step + 1)
    assert rates.index(max(rates)) == 5 and rates[-1] < max(rates)  # up for half, then down


@pytest.mark.parametrize("scheduler", ["cosine", "poly", "step", "constant"])
def test_a_warm_up_of_almost_the_whole_run_leaves_a_step_to_decay(scheduler):
    train = shipped(train={"epochs": 1, "scheduler": scheduler, "warmup_epochs": 0.99}).train
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler_ = build_scheduler(optimizer, train, 0.1, steps_per_epoch=10)
    rates = []
    for step in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        scheduler_.step_update(step + 1)
    assert max(rates) == pytest.approx(0.1) and min(rates) >= 0


def test_early_stopping(ready_project):
    # a learning rate this high makes validation loss worse after the first epoch (not so high
    # that the loss explodes: that run stops as diverged, test below)
    update_params(
        ready_project,
        train={"epochs": 8, "patience": 1, "lr": 0.5, "scheduler": "constant", "grad_clip": None},
    )
    result = train(ready_project)
    assert result.returncode == 0, result.stderr
    summary = metrics(ready_project)
    assert summary["stopped_early"] is True and summary["epochs_run"] < 8
    assert "early stop" in result.stderr


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def kill_after_first_epoch(
    project: Path, module: str = "stages.train", name: str = "resnet"
) -> None:
    """Start training (``module`` of ``name``) and kill -9 it as soon as one epoch is saved
    (mid-epoch two)."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, name],
        cwd=project,
        env=stage_environment(project),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(project / f"checkpoints/{name}/resume.safetensors")
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "training finished before it could be killed"


def test_kill_9_then_resume_equals_an_uninterrupted_run(ready_project, tmp_path):
    update_params(ready_project, train={"epochs": 3})
    uninterrupted = Path(shutil.copytree(ready_project, tmp_path / "uninterrupted"))
    assert train(uninterrupted).returncode == 0

    kill_after_first_epoch(ready_project)
    assert not (ready_project / "models/resnet/model.safetensors").exists()
    resumed = train(ready_project)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from checkpoints/resnet/resume.safetensors after epoch" in resumed.stderr
    assert metrics(ready_project) == metrics(uninterrupted)
    # one continuous history, identical values
    assert history(ready_project, "val/loss") == history(uninterrupted, "val/loss")
    assert [s for s, _ in history(ready_project, "train/loss")] == [1, 2, 3]  # epochs from 1
    ours = ModelCheckpoint.load(ready_project / "models/resnet/model.safetensors").weights
    theirs = ModelCheckpoint.load(uninterrupted / "models/resnet/model.safetensors").weights
    for key, tensor in theirs.items():
        torch.testing.assert_close(ours[key], tensor, rtol=0, atol=0)


def test_changed_params_start_fresh(ready_project):
    update_params(ready_project, train={"epochs": 3})
    kill_after_first_epoch(ready_project)
    update_params(ready_project, train={"epochs": 3, "lr": 0.002})
    result = train(ready_project)
    assert result.returncode == 0
    assert "is from other params or code" in result.stderr and "starting fresh" in result.stderr
    assert "resuming" not in result.stderr
    assert "resnet epoch 1/3" in result.stderr


def test_corrupt_resume_state_is_refused(ready_project):
    state = ready_project / "checkpoints/resnet/resume.safetensors"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"\x80\x04 not a checkpoint")
    result = train(ready_project)
    assert result.returncode == 0, result.stderr
    assert "resume.safetensors is unusable" in result.stderr
    assert "refusing it and starting fresh" in result.stderr
    assert metrics(ready_project)["epochs_run"] == 2


def test_ddp_on_cpu_with_two_processes(ready_project):
    update_params(ready_project, train={"epochs": 2, "batch_size": 32})
    env = {**stage_environment(ready_project), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "stages.train",
            "resnet",
        ],
        cwd=ready_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("resnet epoch 2/2: train loss") == 1  # rank 0 logs alone
    assert sorted(p.name for p in (ready_project / "models/resnet").iterdir()) == [
        "model.safetensors"
    ]
    summary = metrics(ready_project)
    assert summary["epochs_run"] == 2 and summary["best_val_accuracy"] > 0.2


def other_arch_weights(path: Path) -> Path:
    model = timm.create_model("test_vit", num_classes=10, img_size=32)
    torch.save(model.state_dict(), path)
    return path


def pickled_object(path: Path) -> Path:
    torch.save({"state_dict": synthetic.CommandPayload(path.with_suffix(".ran"))}, path)
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"models": {"resnet": {"arch": "resnet5000"}}},
            "models.resnet.arch: unknown timm architecture 'resnet5000'",
        ),
        (
            {"models": {"resnet": {"pretrained": "missing/weights.safetensors"}}},
            "models.resnet.pretrained: weights file 'missing/weights.safetensors' not found",
        ),
        (
            {"models": {"resnet": {"pretrained": "OTHER"}}},
            "does not hold weights of 'test_resnet' (75 missing keys: conv1.0.weight, ",
        ),
        ({"models": {"resnet": {"pretrained": "JUNK"}}}, "is not a readable weights file"),
        (
            {"models": {"resnet": {"pretrained": "PICKLE"}}},
            "is not a weights file: it holds pickled Python objects, not only tensors",
        ),
        (
            {"models": {"resnet": {"freezing": {"strategy": "partial", "groups": 9}}}},
            "models.resnet.freezing.groups: 'partial' freezes 9 groups but the model has only 6",
        ),
        (
            {"models": {"resnet": {"freezing": {"strategy": "progressive", "schedule": [2, 1]}}}},
            "models.resnet.freezing.schedule: must be strictly increasing, got [2, 1]",
        ),
        (
            {"train": {"batch_size": 500}},
            "train.batch_size: 500 is larger than the training set (270 images)",
        ),
        (
            {"train": {"batch_size": 31, "augment": {"mixup": 0.2}}},
            "train.batch_size: CutMix/MixUp pair images within a batch and need an even",
        ),
        (
            {"train": {"augment": {"cutmix": -1.0}}},
            "train.augment.cutmix: Input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_input_one_line_and_outputs_intact(trained_project, tmp_path, change, expected):
    weights = {
        "OTHER": str(other_arch_weights(tmp_path / "other.pth")),
        "JUNK": str(tmp_path / "junk.pth"),
        "PICKLE": str(pickled_object(tmp_path / "object.pth")),
    }
    (tmp_path / "junk.pth").write_bytes(b"these are not weights")
    text = json.dumps(change)
    for placeholder, path in weights.items():
        text = text.replace(f'"{placeholder}"', json.dumps(path))
    before = digest(trained_project / "models/resnet/model.safetensors")
    update_params(trained_project, **json.loads(text))
    result = train(trained_project)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert digest(trained_project / "models/resnet/model.safetensors") == before
    assert not (tmp_path / "object.ran").exists()  # nothing was unpickled


@pytest.mark.parametrize(
    ("train_params", "expected"),
    [
        # a learning rate a million times too large: the loss explodes within the first epoch
        (
            {"optimizer": "sgd", "lr": 1e6, "grad_clip": None, "scheduler": "constant"},
            r"models\.resnet: training diverged in epoch 1, step \d+ \(loss [^)]+; no better "
            r"than guessing is 2\.30\): the learning rate \(1e\+06\) is the likely cause; "
            r"lower train\.lr or models\.resnet\.lr_scale\. No model was written",
        ),
        # and one large enough that the weights themselves overflow
        (
            {"optimizer": "sgd", "lr": 1e30, "grad_clip": None, "scheduler": "constant"},
            r"models\.resnet: training diverged in epoch 1, step \d+ \(loss (nan|inf|[\d.e+]+)",
        ),
    ],
)
def test_a_diverging_run_stops_with_one_line_and_no_best_model(
    ready_project, train_params, expected
):
    """It used to train on to a loss of 1.7e12, save that epoch as the best and exit 0."""
    update_params(ready_project, train={"epochs": 3, **train_params})
    result = train(ready_project)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(f"error: {expected}.*", last), last
    assert "Traceback" not in result.stderr and "*best*" not in result.stderr
    assert not (ready_project / "models/resnet/model.safetensors").exists()


@pytest.mark.slow  # two training processes, one signalled mid-epoch
@pytest.mark.parametrize(("sent", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_says_so_in_one_line_and_resumes(ready_project, sent, code):
    update_params(ready_project, train={"epochs": 40})
    process = subprocess.Popen(
        [sys.executable, "-m", "stages.train", "resnet"],
        cwd=ready_project,
        env=stage_environment(ready_project),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a pytest-xdist worker ignores SIGINT, and its children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for(ready_project / "checkpoints/resnet/resume.safetensors")
    process.send_signal(sent)
    _, stderr = process.communicate(timeout=600)  # 120 s ran out with the load at 7 on 2 cores
    assert process.returncode == code, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: resnet: interrupted in epoch (\d+) of 40; run the same command to resume "
        rf"from its last finished epoch{' [(]SIGTERM[)]' if sent == signal.SIGTERM else ''}",
        last,
    ), last
    assert "Traceback" not in stderr
    update_params(ready_project, train={"epochs": 40})  # the same params: it resumes
    again = subprocess.run(
        [sys.executable, "-m", "stages.train", "resnet"],
        cwd=ready_project,
        env=stage_environment(ready_project),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0 and "resuming from checkpoints/resnet" in again.stderr


def test_an_interrupt_between_epochs_names_the_next_epoch_and_keeps_the_finished_one(tmp_path):
    """A signal lands wherever the process is: here after epoch 1's resume state is written,
    before epoch 2 begins (CI's loaded runner hit this window with a plain 'interrupted')."""
    params = shipped(**tiny_training_params(epochs=3, batch_size=8))

    def interrupt(epoch: int, metrics: dict[str, float]) -> bool:
        raise KeyboardInterrupt

    run = replace(
        generated_run(params, "resnet", images=16),
        state_path=tmp_path / "resume.safetensors",
        fingerprint="between epochs",
        should_stop=interrupt,
    )
    with pytest.raises(TrainingInterrupted) as interrupted:
        Trainer(run).fit()
    assert str(interrupted.value) == (
        "resnet: interrupted in epoch 2 of 3; run the same command to resume from its last "
        "finished epoch"
    )
    assert load_resume_state(run.state_path, "between epochs")["epoch"] == 1


@pytest.mark.parametrize(
    "blocked", ["models/resnet", "metrics/train", "dvclive/resnet", "checkpoints/resnet"]
)
def test_an_output_that_cannot_be_written_stops_before_the_first_epoch(ready_project, blocked):
    """A read-only or misplaced output folder used to cost every epoch and then a traceback.
    (A file where the folder goes stands in for read-only: root may write anywhere.)"""
    (ready_project / blocked).parent.mkdir(parents=True, exist_ok=True)
    (ready_project / blocked).write_text("a file where a folder goes")
    result = train(ready_project)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith(f"error: {blocked}/") and "cannot write it (cannot make the folder" in last
    )
    assert last.endswith("nothing was trained") and "epoch 1/" not in result.stderr


class DeviceReads(TorchDispatchMode):
    """Counts the values read back from tensors (``.item()``, ``bool()``, ``int()``...): on
    a GPU, each makes the host wait for the work queued before it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("extra", [{}, {"ema_decay": 0.9, "grad_clip": 1.0}])
def test_a_training_epoch_reads_back_one_loss_a_step_and_its_correct_count(extra):
    """Nothing else in a step of the cpu recipe (airbench, Muon) waits for the device: the
    epoch's reads are its losses (each one step late) and the correct count at its end. Left
    out, as here every tensor is on the CPU: mixing and AdamW, which read values that stay on
    the CPU by design (the choice of mix, the step count)."""
    train = {"optimizer": "muon", "augment": {"flip": "alternate"}, **extra}
    sections = tiny_training_params(epochs=2, batch_size=16, **train)
    sections["models"]["airbench"] = {
        **sections["models"]["resnet"],
        "arch": "airbench_small",
    }
    params = shipped(**sections)
    trainer = Trainer(generated_run(params, "airbench", images=64))
    trainer.train_epoch(0)  # a first step may look once (airbench fits its whitening)
    with DeviceReads() as reads:
        trainer.train_epoch(1)
    assert trainer.steps_per_epoch == 4
    assert reads.count == trainer.steps_per_epoch + 1
