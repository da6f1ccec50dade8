"""params.yaml checking: one line naming the key, exit code 2, nothing written."""

from __future__ import annotations

import pytest
import yaml

from stages.common.errors import ParamsError
from stages.common.params import load_params, parse_params
from tests.conftest import ROOT, run_module, update_params


def test_shipped_params_are_valid():
    params = load_params(ROOT / "params.yaml")
    assert set(params.models) == {"resnet", "efficientnet", "vit"}
    assert params.model_train_params("vit").lr == pytest.approx(1e-4)
    assert params.model_train_params("resnet").lr == params.train.lr


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"seed": 1.5}, "seed: Input should be a valid integer"),
        ({"seed": "abc"}, "seed: Input should be a valid integer"),
        ({"data": {"val_ratio": 0}}, "data.val_ratio: Input should be greater than 0"),
        ({"data": {"val_ratio": 1.5}}, "data.val_ratio: Input should be less than 1"),
        ({"data": {"val_rato": 0.1}}, "data.val_rato: unknown key (did you mean 'val_ratio'?)"),
        ({"trian": {}}, "trian: unknown key (did you mean 'train'?)"),
        ({"data": {"subset": 0}}, "data.subset: Input should be greater than or equal to 1"),
        ({"data": {"on_bad_image": "ignore"}}, "data.on_bad_image: Input should be 'skip' or"),
        ({"train": {"augment": {"stratgy": "x"}}}, "train.augment.stratgy: unknown key (did you"),
        ({"models": {"vit": {"arch": "x", "lrr": 1}}}, "models.vit.lrr: unknown key (did you"),
        ({"models": {"vit": {"pretrained": True}}}, "models.vit.arch: required key is missing"),
        ({"models": {"vit": {"arch": "x", "lr": -1.0}}}, "models.vit.lr: Input should be greater"),
    ],
)
def test_bad_values_name_the_key(raw, expected):
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert str(error.value).startswith(expected), str(error.value)
    assert "\n" not in str(error.value)


def test_numbers_written_as_strings_by_yaml_are_accepted():
    # YAML 1.1 reads 1e-3 as a string; `dvc exp run -S train.lr=1e-3` must still work.
    assert parse_params({"train": {"lr": "1e-3"}}).train.lr == pytest.approx(1e-3)


def test_per_model_overrides_merge_nested_sections():
    params = parse_params(
        {"models": {"vit": {"arch": "x", "augment": {"mixup": 0.2}, "batch_size": 64}}}
    )
    train = params.model_train_params("vit")
    assert (train.batch_size, train.augment.mixup, train.augment.strategy) == (64, 0.2, "standard")


@pytest.mark.parametrize(
    ("freezing", "expected"),
    [
        ({"strategy": "progressive", "schedule": [5, 3]}, "must be strictly increasing"),
        ({"strategy": "progressive", "schedule": [-1, 2]}, "epochs must be >= 1"),
        ({"strategy": "progressive", "schedule": []}, "'progressive' needs epochs"),
        ({"strategy": "progressive", "schedule": [2, 40]}, "epoch 40 is past the last epoch"),
        ({"strategy": "partial", "groups": 0}, "'partial' needs groups >= 1"),
    ],
)
def test_freezing_schedule_checks(freezing, expected):
    with pytest.raises(ParamsError, match=expected) as error:
        parse_params(
            {"train": {"epochs": 10}, "models": {"m": {"arch": "x", "freezing": freezing}}}
        )
    assert str(error.value).startswith("models.m.freezing.schedule") or "groups" in str(error.value)


def test_mixing_needs_an_even_batch():
    with pytest.raises(ParamsError, match="even train.batch_size, got 33"):
        parse_params(
            {
                "train": {"batch_size": 33, "augment": {"cutmix": 1.0}},
                "models": {"m": {"arch": "x"}},
            }
        )


def test_stage_exits_2_with_one_line_and_writes_nothing(project):
    update_params(project, data={"val_ratio": 1.5})
    result = run_module(project, "stages.prepare")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: data.val_ratio: Input should be less than 1 (got 1.5)"
    ]
    assert "Traceback" not in result.stderr
    assert not (project / "data").exists() and not (project / "metrics").exists()


def test_invalid_yaml_is_reported_with_the_line(project):
    (project / "params.yaml").write_text("seed: 1\ndata: [unclosed\n")
    result = run_module(project, "stages.prepare")
    assert result.returncode == 2
    assert "params.yaml: line" in result.stderr and "Traceback" not in result.stderr


def test_typo_in_another_section_stops_every_stage(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"]["vit"]["freezing"]["stratgy"] = "none"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_module(project, "stages.prepare")
    assert result.returncode == 2
    assert "models.vit.freezing.stratgy: unknown key (did you mean 'strategy'?)" in result.stderr


def test_check_params_names_an_unknown_architecture(project):
    update_params(project, models={"vit": {"arch": "vit_base_patch16_2244"}})
    result = run_module(project, "stages.check_params")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: models.vit.arch: unknown timm architecture 'vit_base_patch16_2244'")
    )


def test_check_params_accepts_the_shipped_file(project):
    result = run_module(project, "stages.check_params")
    assert result.returncode == 0, result.stderr
    assert "params.yaml is valid (3 models: resnet, efficientnet, vit)" in result.stderr
