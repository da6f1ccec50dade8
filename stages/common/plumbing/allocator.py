"""The allocator setting every command starts with (stages/common/plumbing/command.py): on glibc,
keep freed memory instead of returning it to the OS after every step."""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning it to the OS after every step.

    By default large tensors are mmap-ed and unmapped each step, so every training step
    page-faults its activations in again: on the 2-core development VM that was 420k faults
    and 7% of CPU time per 10k images (benchmarks/cpu_recipe.py). No-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 256 << 20))
    if all(libc.mallopt(option, value) == 1 for option, value in settings):
        log.debug("glibc malloc: no mmap, no trimming")
