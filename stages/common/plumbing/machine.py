"""What the machine offers: the device, usable CPUs, bf16 support, and this process's place in
a distributed (torchrun) run."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the data stages use this module and should not pay torch's import
    import torch

log = logging.getLogger(__name__)
MAX_AUTO_WORKERS = 8


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (as in a
    container limited with --cpus)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(count, quota)) if quota else max(1, count)


def _cgroup_cpu_quota() -> int | None:
    """The cgroup v2 (cpu.max) or v1 (cfs quota/period) CPU limit, rounded up; None if unset."""
    v2 = Path("/sys/fs/cgroup/cpu.max")
    try:
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else -(-int(quota) // int(period))
        v1 = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        if v1.is_file():
            quota_us = int(v1.read_text())
            period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 else -(-quota_us // period_us)
    except (OSError, ValueError):
        return None
    return None


def loader_workers(setting: str | int, per_sample_work: bool = True) -> int:
    """DataLoader worker processes for ``train.workers`` ('auto': the usable CPUs, at most 8;
    none when the augmentation has no per-sample work, as a batch's crop and flip cost less
    than handing the batch over from a worker, and on a CPU workers take cores from training)."""
    if setting == "auto":
        return min(available_cpus(), MAX_AUTO_WORKERS) if per_sample_work else 0
    return int(setting)


def bf16_on_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower
    than float32, so autocast on such a CPU would only cost time."""
    flags = Path("/proc/cpuinfo")
    try:
        text = flags.read_text() if flags.is_file() else ""
    except OSError:
        return False
    return "avx512_bf16" in text or "amx_bf16" in text


def use_amp(setting: str | bool, device: torch.device) -> bool:
    """``train.amp``: auto = bf16 autocast on CUDA; true = also on a CPU with native bf16."""
    if device.type == "cuda":
        return setting is not False
    return setting is True and bf16_on_cpu()


def tuned(device: torch.device) -> torch.device:
    """``device``, with cuDNN's autotuner on when it is a GPU: the first convolution of each
    input shape times cuDNN's algorithms and keeps the fastest, where its heuristics alone
    may pick a slow one (training's shapes are fixed, so it times once). It is what the speed
    record's trainer does; it may pick other algorithms from run to run, and a GPU's results
    were never bit-for-bit repeatable anyway (cuDNN's backward adds atomically). A CPU is
    left as it is."""
    import torch

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on ``device`` when enabled; a no-op context otherwise."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun/DDP run (rank 0 of 1 for a plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        """torchrun's RANK/WORLD_SIZE/LOCAL_RANK; a plain run is rank 0 of 1."""
        import torch
        import torch.distributed as dist

        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(
            int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0"))
        )

    def device(self) -> torch.device:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return tuned(torch.device("cuda", self.local_rank))
        return torch.device("cpu")

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, so every rank stops (or not) together."""
        if self.world_size == 1:
            return flag
        import torch
        import torch.distributed as dist

        value = torch.tensor([int(flag)])
        dist.broadcast(value, src=0)
        return bool(value.item())


@contextmanager
def process_group_closed() -> Iterator[None]:
    """Run a training stage's body; afterwards, however it ended, end torchrun's process group
    if the run started one (Distributed.from_env)."""
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
