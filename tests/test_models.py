"""The model factory: timm architectures with this project's head and preprocessing."""

from __future__ import annotations

import logging

import timm
from safetensors.torch import save_file

from stages.common.config.training import ModelParams
from stages.common.models.factory import build_model


def test_weights_from_a_file_load_without_timm_s_own_log_lines(tmp_path, caplog):
    """timm logs "Loaded  from checkpoint '<file>'" (its key name empty) for a local file: a
    stray line in every stage's output."""
    weights = tmp_path / "test_resnet.safetensors"
    save_file(timm.create_model("test_resnet").state_dict(), str(weights))
    spec = ModelParams(arch="test_resnet", pretrained=str(weights), img_size=32)
    with caplog.at_level(logging.DEBUG):
        model, preprocessing = build_model("resnet", spec, 10)
    assert not [record.getMessage() for record in caplog.records if record.name.startswith("timm")]
    assert model.get_classifier().out_features == 10 and preprocessing.img_size == 32
