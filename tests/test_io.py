"""Atomic writes: whole files or none, with the mode every other output has."""

from __future__ import annotations

import os
import stat

import torch

from stages.common.plumbing.files import write_text
from stages.common.plumbing.tensor_files import save_tensors


def test_model_files_get_the_usual_mode_like_every_other_output(tmp_path):
    """safetensors replaces the temporary file with its own, made 0600: model files were
    written 0600 while other outputs were 0644."""
    umask = os.umask(0)
    os.umask(umask)
    save_tensors(tmp_path / "model.safetensors", {"w": torch.zeros(2)}, {"k": "v"})
    write_text(tmp_path / "metrics.json", "{}")
    for name in ("model.safetensors", "metrics.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model.safetensors"]
