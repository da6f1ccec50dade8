"""params.yaml checking: one line naming the key, exit code 2, nothing written."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from stages.common.config.params import Params, parse_params
from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.stage_params import SECTIONS
from tests import synthetic
from tests.conftest import (
    ROOT,
    copy_project,
    run_module,
    run_process,
    shipped_raw,
    update_params,
)

SHIPPED = shipped_raw()


def merged(**sections) -> dict:
    """The shipped params with ``sections`` merged in (a None value deletes the key)."""
    raw = copy.deepcopy(SHIPPED)

    def merge(base: dict, update: dict) -> None:
        for key, value in update.items():
            if value is None and key in base:
                del base[key]
            elif value and isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value

    merge(raw, sections)
    return raw


def test_shipped_params_are_valid():
    params = parse_params(SHIPPED)
    assert set(params.models) == {"resnet", "efficientnet", "vit"}
    assert params.learning_rate("vit") == pytest.approx(1e-4)
    assert params.learning_rate("resnet") == params.train.lr


def test_a_shared_key_moves_every_model():
    params = parse_params(merged(train={"lr": 0.003}))
    assert params.learning_rate("resnet") == pytest.approx(0.003)
    assert params.learning_rate("vit") == pytest.approx(0.0003)  # its lr_scale 0.1 holds


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"seed": 1.5}, "seed: Input should be a valid integer"),
        ({"seed": "abc"}, "seed: Input should be a valid integer"),
        ({"data": {"val_ratio": 0}}, "data.val_ratio: Input should be greater than 0"),
        ({"data": {"val_ratio": 1.5}}, "data.val_ratio: Input should be less than 1"),
        ({"data": {"val_rato": 0.1}}, "data.val_rato: unknown key (did you mean 'val_ratio'?)"),
        ({"trian": {}}, "trian: unknown key (did you mean 'train'?)"),
        ({"data": {"subset": 0}}, "data.subset: Input should be greater than or equal to 1"),
        ({"data": {"on_bad_image": "ignore"}}, "data.on_bad_image: Input should be 'skip' or"),
        ({"data": {"classes": "cifar100"}}, "data.classes: Input should be 'cifar10' or 'any'"),
        ({"train": {"augment": {"stratgy": "x"}}}, "train.augment.stratgy: unknown key (did you"),
        ({"train": {"epochs": None}}, "train.epochs: required key is missing"),
        ({"train": {"workers": "many"}}, "train.workers: Input should be 'auto'"),
        ({"train": {"lr": float("inf")}}, "train.lr: Input should be a finite number"),
        ({"train": {"weight_decay": float("nan")}}, "train.weight_decay: Input should be a finite"),
        ({"train": {"grad_clip": float("inf")}}, "train.grad_clip: Input should be a finite"),
        ({"train": {"muon_lr": float("-inf")}}, "train.muon_lr: Input should be a finite"),
        ({"evaluate": {"tsne_perplexity": float("nan")}}, "evaluate.tsne_perplexity: Input should"),
        ({"models": {"vit": {"lrr": 1}}}, "models.vit.lrr: unknown key (known: arch, freezing,"),
        ({"models": {"vit": {"arch": None}}}, "models.vit.arch: required key is missing"),
        ({"models": {"vit": {"lr_scale": -1.0}}}, "models.vit.lr_scale: Input should be greater"),
        (
            {"models": {"vit": {"batch_size": 64}}},
            "models.vit.batch_size: unknown key: every model shares train.batch_size; "
            "models.vit.train.batch_size sets it for this model alone (per-model keys:",
        ),
        ({"models": {"vit": {"train": {"lr": -1}}}}, "models.vit.train.lr: Input should be gre"),
        ({"models": {"vit": {"train": {"lrr": 1}}}}, "models.vit.train.lrr: unknown key (did you"),
        ({"models": {"vit": {"train": {"epochs": None}}}}, "models.vit.train.epochs: Input should"),
        (
            {"models": {"vit": {"train": {"augment": {"flip": "up"}}}}},
            "models.vit.train.augment.flip: Input should be 'random' or 'alternate'",
        ),
        (
            {"distill": {"kd": {"teacher": "x", "student": "vit", "temperature": 2, "alpha": 0.5}}},
            "distill.kd.teacher: 'x' is not a key of models (defined: resnet, efficientnet, vit)",
        ),
        (
            {
                "distill": {
                    "vit": {"teacher": "resnet", "student": "vit", "temperature": 2, "alpha": 1}
                }
            },
            "distill.vit: a model of that name exists (models.vit)",
        ),
        (
            {"distill": {"kd": {"teacher": "resnet", "student": "vit", "temperature": 2}}},
            "distill.kd.alpha: required key is missing",
        ),
        (
            {"distill": {"k d": dict(teacher="vit", student="vit", temperature=2, alpha=0)}},
            "distill: 'k d' is not a valid model name",
        ),
        (
            {"models": {"a b": {"arch": "x", "pretrained": False}}},
            "models: 'a b' is not a valid model name",
        ),
        ({"downloads": {"x": {"url": "u", "md5": "abc", "path": "p"}}}, "downloads.x.md5: String"),
        ({"tune": {"space": {}}}, "tune.space: the search space is empty"),
        (
            {"tune": {"space": {"train.lr": {"type": "float", "low": 0.1, "high": 0.01}}}},
            "tune.space.train.lr: low 0.1 must be below high 0.01",
        ),
        (
            {"tune": {"space": {"train.lr": {"type": "float", "low": 0, "high": 1, "log": True}}}},
            "tune.space.train.lr.log: a log-scale range needs low > 0",
        ),
        (
            {"tune": {"space": {"train.lrr": {"type": "float", "low": 0.1, "high": 1}}}},
            "tune.space.train.lrr: 'lrr' is not a key of train (did you mean 'lr'?)",
        ),
        (
            {"tune": {"space": {"train": {"type": "float", "low": 0.1, "high": 1}}}},
            "tune.space.train: names a section, not a single value",
        ),
        (
            {
                "tune": {
                    "space": {"train.lr": {"type": "float", "low": -1, "high": 1, "log": False}}
                }
            },
            "tune.space.train.lr: -1.0 is not a valid train.lr (Input should be greater than 0",
        ),
        (
            {"tune": {"space": {"train.optimizer": {"type": "categorical", "choices": ["lion"]}}}},
            "tune.space.train.optimizer: 'lion' is not a valid train.optimizer",
        ),
        (
            {"tune": {"space": {"train.epochs": {"type": "int", "low": 1.5, "high": 4}}}},
            "tune.space.train.epochs: an int range needs whole bounds",
        ),
        ({"tune": {"pruner": "asha"}}, "tune.pruner: Input should be 'median', 'hyperband'"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"seed": 2**70}, "seed: Input should be less than 4294967296"),
        ({"models": {}}, "models: no models: name at least one"),
        ({"train": {"lr": [0.1] * 1_000_000}}, "train.lr: Input should be a valid number (got"),
    ],
)
def test_bad_values_name_the_key(sections, expected):
    with pytest.raises(ParamsError) as error:
        parse_params(merged(**sections))
    assert str(error.value).startswith(expected), str(error.value)
    assert "\n" not in str(error.value) and len(str(error.value)) < 300  # values quoted short


def test_numbers_written_as_strings_by_yaml_are_accepted():
    # YAML 1.1 reads 1e-3 as a string; `dvc exp run -S train.lr=1e-3` must still work.
    assert parse_params(merged(train={"lr": "1e-3"})).train.lr == pytest.approx(1e-3)


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
        parse_params(merged(train={"epochs": 10}, models={"resnet": {"freezing": freezing}}))
    assert str(error.value).startswith(("models.resnet.freezing.schedule", "models.resnet.free"))


def test_mixing_needs_an_even_batch():
    with pytest.raises(ParamsError, match="^train.batch_size: CutMix/MixUp .* got 33"):
        parse_params(merged(train={"batch_size": 33, "augment": {"cutmix": 1.0}}))
    own = {"resnet": {"train": {"batch_size": 33}}}
    with pytest.raises(ParamsError, match="^models.resnet.train.batch_size: CutMix/MixUp"):
        parse_params(merged(train={"augment": {"cutmix": 1.0}}, models=own))


def test_a_models_own_train_keys_override_the_shared_ones_for_it_alone():
    own = {"lr": 0.05, "epochs": 3, "grad_clip": None, "augment": {"flip": "alternate"}}
    params = parse_params(merged(models={"vit": {"train": own}}))
    vit, resnet = params.training("vit"), params.training("resnet")
    assert (vit.lr, vit.epochs, vit.grad_clip) == (0.05, 3, None)
    assert vit.augment.flip == "alternate"
    assert vit.augment.strategy == params.train.augment.strategy  # the rest of augment shared
    assert vit.batch_size == params.train.batch_size
    assert resnet == params.train
    assert params.learning_rate("vit") == pytest.approx(0.05 * 0.1)  # its lr_scale still holds
    # written out with the keys given only: what checkpoints and DVCLive record
    assert params.model("vit").model_dump()["train"] == own
    assert params.model("resnet").model_dump()["train"] == {}


def test_a_sweep_refuses_to_search_a_key_the_model_overrides():
    from stages.common.tuning.sweep import epochs_key, refuse_overridden_space

    params = parse_params(merged(models={"vit": {"train": {"lr": 0.05, "epochs": 3}}}))
    with pytest.raises(ParamsError, match="^tune.space.train.lr: models.vit.train.lr overrides"):
        refuse_overridden_space(params, "vit")
    refuse_overridden_space(params, "resnet")
    assert epochs_key(params, "vit") == "models.vit.train.epochs"
    assert epochs_key(params, "resnet") == "train.epochs"


def test_stage_exits_2_with_one_line_and_writes_nothing(project):
    """In a real process, as DVC runs it (the other tests call stages inside pytest)."""
    update_params(project, data={"val_ratio": 1.5})
    result = run_process(project, "stages.prepare")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: data.val_ratio: Input should be less than 1 (got 1.5)"
    ]
    assert not (project / "data").exists() and not (project / "metrics").exists()


def test_invalid_yaml_is_one_line_with_the_right_line(project):
    text = (project / "params.yaml").read_text().replace("  epochs: 10", "  epochs: [10", 1)
    (project / "params.yaml").write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "epochs: [10" in row)
    result = run_module(project, "stages.prepare")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: params.yaml: line ")
    reported = int(lines[0].split("line ")[1].split(",")[0])
    assert line <= reported <= line + 1, (line, lines[0])


def test_a_stage_checks_the_sections_it_reads_and_check_params_all(project):
    """A typo in `models` stops train (and run.sh's check) with one line; prepare, which does
    not read `models`, is not its business (editing one section's schema re-runs only the
    stages that read it: stages/common/plumbing/stage_params.py)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["models"]["vit"]["freezing"]["stratgy"] = "none"
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    expected = "error: models.vit.freezing.stratgy: unknown key (did you mean 'strategy'?)"
    assert run_module(project, "stages.prepare").returncode == 0
    for command in (["stages.train", "resnet"], ["stages.check_params"]):
        result = run_module(project, *command)
        assert result.returncode == 2, command
        assert result.stderr.strip().splitlines()[-1] == expected, command
    assert not (project / "models").exists()


def test_an_unknown_section_stops_every_stage(project):
    text = (project / "params.yaml").read_text().replace("train:", "trian:\n  x: 1\ntrain:", 1)
    (project / "params.yaml").write_text(text)
    for stage in ("stages.prepare", "stages.export"):
        result = run_module(project, stage)
        assert result.returncode == 2, stage
        assert result.stderr.strip() == "error: trian: unknown key (did you mean 'train'?)"


def test_every_section_is_known_to_the_stages():
    assert tuple(field.alias or name for name, field in Params.model_fields.items()) == SECTIONS


def test_check_params_accepts_the_shipped_file(project):
    result = run_module(project, "stages.check_params")
    assert result.returncode == 0, result.stderr
    assert "params.yaml is valid (3 models: resnet, efficientnet, vit)" in result.stderr


@pytest.fixture(scope="module")
def preset_data(tmp_path_factory) -> Path:
    """Generated images enough for every preset's batch and split (the CPU preset trains in
    batches of 1,000 and holds out 2%)."""
    return synthetic.write_image_folder(tmp_path_factory.mktemp("preset") / "data", 110, 10)


@pytest.mark.parametrize("preset", sorted(path.stem for path in (ROOT / "presets").glob("*.yaml")))
def test_every_preset_makes_a_valid_params_file(tmp_path, preset_data, preset):
    project = copy_project(tmp_path / "project", extra=("presets",))
    made = run_module(project, "stages.preset", preset, "--data", str(preset_data))
    assert made.returncode == 0, made.stderr
    overrides = [arg for line in made.stdout.splitlines() for arg in ("-S", line)]
    checked = run_module(project, "stages.check_params", *overrides)
    assert checked.returncode == 0, checked.stderr
    assert "params.yaml is valid" in checked.stderr


# "billion laughs": each of nine levels repeats the one below nine times (4.9e8 values)
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


def line_of(text: str, line: str, occurrence: int = 1) -> int:
    """The 1-based number of the ``occurrence``-th line of ``text`` equal to ``line``."""
    numbers = [n for n, found in enumerate(text.splitlines(), 1) if found == line]
    return numbers[occurrence - 1]


def duplicate_lr(text: str) -> tuple[bytes, str]:
    original = next(line for line in text.splitlines() if line.strip().startswith("lr: "))
    damaged = text.replace(original, f"{original}\n{original}", 1)
    first, second = line_of(damaged, original), line_of(damaged, original, 2)
    return damaged.encode(), f"line {second}: duplicate key 'lr' (first at line {first})"


def duplicate_seed(text: str) -> tuple[bytes, str]:
    damaged = text + "seed: 7\n"
    first = next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith("seed:"))
    return damaged.encode(), f"line {len(damaged.splitlines())}: duplicate key 'seed' " + (
        f"(first at line {first}); YAML would keep only the last one"
    )


def latin_1(text: str) -> tuple[bytes, str]:
    damaged = text.replace("seed: 42", "seed: 42 # caf\u00e9", 1).encode("latin-1")
    return damaged, f"not UTF-8 text (byte 0xe9 at offset {damaged.index(0xE9)}); save it as UTF-8"


FILE_CASES = [
    latin_1,
    lambda text: (text.encode("utf-16"), "not UTF-8 text (byte 0xff at offset 0)"),
    duplicate_lr,
    duplicate_seed,
    lambda text: (
        (text + BOMB).encode(),
        "its aliases expand to 4.9e+08 values (a params file has hundreds; an alias bomb?)",
    ),
]


@pytest.mark.parametrize("damage", FILE_CASES)
def test_a_params_file_pyyaml_would_misread_is_one_line(project, damage):
    """Each refused before any stage runs: DVC reads params as UTF-8 and refuses duplicate
    keys with a ten-line error; an alias bomb hung check_params and every stage."""
    path = project / "params.yaml"
    damaged, expected = damage(path.read_text())
    path.write_bytes(damaged)
    result = run_process(project, "stages.check_params", timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: params.yaml: {expected}"), lines
