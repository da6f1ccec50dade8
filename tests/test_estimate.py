"""The cost estimate run.sh prints before DVC starts: real steps of the engine, scaled to the run.
(How close it comes to a real run is a benchmark's question: benchmarks/estimate.py.)"""

from __future__ import annotations

import pytest
import torch

from stages.common import estimate
from tests.conftest import shipped, tiny_training_params

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="times the CPU path")


@pytest.fixture(scope="module")
def params():
    sections = tiny_training_params(epochs=3)
    sections["train"]["batch_size"] = 32
    return shipped(**sections)


def test_a_small_net_is_timed_at_its_full_batch_and_scaled_to_the_run(params, monkeypatch):
    """Whether a step fits the budget depends on the machine's load (a loaded CI runner took 1 s
    for 2 images): an unbounded budget checks the growth to the full batch, not the timing."""
    monkeypatch.setattr(estimate, "CPU_STEP_BUDGET", float("inf"))
    result = estimate.estimate_model(params, "resnet", train_images=1000, val_images=100, epochs=3)
    assert result.device == "cpu" and result.arch == "test_resnet" and result.img_size == 32
    assert result.timed_batch == 32  # grown 4x at a time from 2, capped at the batch
    assert result.steps_per_epoch == 1000 // 32
    assert result.step_seconds > 0 and result.eval_seconds_per_image > 0
    assert result.epoch_seconds == pytest.approx(
        31 * result.step_seconds + 100 * result.eval_seconds_per_image
    )
    assert result.seconds == pytest.approx(3 * result.epoch_seconds)
    assert result.measured_seconds > 0


def test_a_slow_step_is_timed_on_a_few_images_and_scaled_per_image(params, monkeypatch):
    """A 224 px ResNet-50 takes seconds per image on a CPU: its full batch is not timed."""
    monkeypatch.setattr(estimate, "CPU_STEP_BUDGET", 1e-9)
    result = estimate.estimate_model(params, "vit", train_images=640, val_images=64, epochs=1)
    assert result.timed_batch == estimate.FIRST_CPU_BATCH
    assert result.steps_per_epoch == 20 and result.seconds > 0


def test_every_model_builds_its_configured_input_size(params):
    sections = tiny_training_params()
    sections["models"]["vit"]["img_size"] = 48
    result = estimate.estimate_model(shipped(**sections), "vit", 320, 32, 1)
    assert result.img_size == 48


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0.42, "0.4 s"),
        (45, "45 s"),
        (12 * 60, "12 min"),
        (3.4 * 3600, "3.4 h"),
        (9 * 86400, "9.0 days"),
    ],
)
def test_durations_read_as_people_say_them(seconds, said):
    assert estimate.duration(seconds) == said
