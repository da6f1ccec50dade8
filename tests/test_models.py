"""The model factory: timm architectures with this project's head and preprocessing."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
from safetensors.torch import save_file

from stages.common.config.training import ModelParams
from stages.common.data.cifar10 import MEAN, STD
from stages.common.models.factory import build_model, input_size
from stages.common.plumbing.errors import ParamsError


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


def test_a_model_from_scratch_starts_at_uniform_predictions_at_cifar_s_size():
    """No pretrained weights: native 32 px, CIFAR-10's normalisation, a zero head (every class
    equally likely before the first step)."""
    spec = ModelParams(arch="test_resnet", pretrained=False)
    model, preprocessing = build_model("resnet", spec, 10)
    assert input_size(spec) == preprocessing.img_size == 32
    assert (preprocessing.mean, preprocessing.std) == (MEAN, STD)
    head = model.get_classifier()
    assert head.out_features == 10 and all(not p.any() for p in head.parameters())
    model.eval()
    with torch.no_grad():
        probabilities = model(torch.rand(2, 3, 32, 32)).softmax(1)
    assert torch.allclose(probabilities, torch.full((2, 10), 0.1))


def test_the_training_size_is_img_size_else_native_else_the_weights_own():
    assert input_size(ModelParams(arch="a", pretrained=False, img_size=64)) == 64
    assert input_size(ModelParams(arch="a", pretrained=False)) == 32
    assert input_size(ModelParams(arch="a", pretrained=True)) is None


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            ModelParams(arch="resnet_fifty", pretrained=False),
            "models.m.arch: unknown timm architecture 'resnet_fifty'",
        ),
        (
            ModelParams(arch="test_resnet", pretrained="missing.safetensors"),
            "models.m.pretrained: weights file 'missing.safetensors' not found",
        ),
    ],
)
def test_what_cannot_be_built_is_one_line_naming_the_key(spec, expected):
    with pytest.raises(ParamsError) as error:
        build_model("m", spec, 10)
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_weights_of_another_architecture_are_refused_naming_the_keys(tmp_path):
    weights = tmp_path / "vit.safetensors"
    save_file(timm.create_model("test_vit").state_dict(), str(weights))
    spec = ModelParams(arch="test_resnet", pretrained=str(weights), img_size=32)
    with pytest.raises(ParamsError, match=r"^models\.m\.pretrained: .*vit\.safetensors"):
        build_model("m", spec, 10)


def test_airbench_whitens_with_the_first_training_batch_and_a_loaded_net_keeps_its_filters():
    torch.manual_seed(0)
    first, second = torch.rand(2, 16, 3, 32, 32)
    net = timm.create_model("airbench_small", num_classes=10).train()
    net(first)
    fitted = net.whiten.weight.clone()
    assert bool(net.whiten.initialised) and fitted.abs().sum() > 0
    net(second)
    assert torch.equal(net.whiten.weight, fitted)  # fitted once

    loaded = timm.create_model("airbench_small", num_classes=10).train()
    loaded(second)  # fitted on another batch: other filters
    assert not torch.equal(loaded.whiten.weight, fitted)
    loaded.load_state_dict(net.state_dict())
    loaded(second)
    assert torch.equal(loaded.whiten.weight, fitted)  # the loaded filters, not refitted

    unfitted = timm.create_model("airbench_small", num_classes=10).state_dict()
    loaded.load_state_dict(unfitted)  # a state whose filters were never set: fit again
    loaded(first)
    assert torch.equal(loaded.whiten.weight, fitted)
