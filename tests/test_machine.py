"""What the machine offers (stages/common/plumbing/machine.py): CPUs under a cgroup quota,
DataLoader workers, mixed precision and a process's place in a torchrun run."""

from __future__ import annotations

import pytest
import torch

from stages.common.plumbing import machine


@pytest.mark.parametrize(("quota", "expected"), [(None, 6), (2, 2), (16, 6)])
def test_usable_cpus_are_the_affinity_capped_by_the_cgroup_quota(monkeypatch, quota, expected):
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: set(range(6)))
    monkeypatch.setattr(machine, "_cgroup_cpu_quota", lambda: quota)
    assert machine.available_cpus() == expected


def test_auto_workers_are_the_cpus_up_to_eight_and_none_without_per_sample_work(monkeypatch):
    monkeypatch.setattr(machine, "available_cpus", lambda: 32)
    assert machine.loader_workers("auto") == machine.MAX_AUTO_WORKERS == 8
    assert machine.loader_workers("auto", per_sample_work=False) == 0
    assert machine.loader_workers(3, per_sample_work=False) == 3


@pytest.mark.parametrize(
    ("setting", "device", "native_bf16", "expected"),
    [
        ("auto", "cuda", False, True),
        (False, "cuda", True, False),
        ("auto", "cpu", True, False),  # auto never on a CPU
        (True, "cpu", False, False),  # emulated bf16 is slower than float32
        (True, "cpu", True, True),
    ],
)
def test_amp(monkeypatch, setting, device, native_bf16, expected):
    monkeypatch.setattr(machine, "bf16_on_cpu", lambda: native_bf16)
    assert machine.use_amp(setting, torch.device(device)) is expected


def test_a_plain_run_is_rank_zero_of_one_and_torchrun_s_variables_place_it(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    plain = machine.Distributed.from_env()
    assert (plain.rank, plain.world_size, plain.is_main) == (0, 1, True)
    assert plain.broadcast_flag(True) is True
    placed = machine.Distributed(rank=2, world_size=4, local_rank=0)
    assert not placed.is_main


def test_a_gpu_is_handed_out_with_cudnns_autotuner_on_and_a_cpu_as_it_is(monkeypatch):
    """Training (Distributed.device) and inference (inference_device) both get a tuned GPU."""
    from stages.common.models.inference import inference_device

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert machine.Distributed().device().type == inference_device().type == "cpu"
    assert torch.backends.cudnn.benchmark is False

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    assert machine.Distributed(local_rank=1).device() == torch.device("cuda", 1)
    assert torch.backends.cudnn.benchmark is True
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert inference_device().type == "cuda"
    assert torch.backends.cudnn.benchmark is True
