"""The experiments table (stages/common/reporting/experiments.py) from rows as DVC lists them:
which columns, in what order, and how it fits a width. (The real `dvc exp show` rows:
tests/test_dvc_pipeline.py.)"""

from __future__ import annotations

import pytest

from stages.common.config.param_changes import flatten
from stages.common.plumbing.errors import ParamsError
from stages.common.reporting.experiments import (
    Row,
    dropped_note,
    fit,
    render_text,
    sort_rows,
    table,
)
from tests.conftest import run_module

MODELS = {
    "resnet": {"arch": "resnet50", "pretrained": True, "lr_scale": 1.0},
    "vit": {"arch": "vit_base_patch16_224.augreg_in21k", "pretrained": True, "lr_scale": 0.1},
}
PARAMS = {
    "seed": 42,
    "downloads": {"cifar10": {"url": "https://example.org/c.tar.gz", "md5": "0" * 32}},
    "data": {"source": "data/raw/cifar-10-python.tar.gz", "subset": None, "val_ratio": 0.1},
    "train": {"epochs": 10, "lr": 0.001, "batch_size": 128, "augment": {"strategy": "standard"}},
    "models": MODELS,
}


def row(label: str, params: dict, accuracy: dict[str, float] | None = None) -> Row:
    metrics = {f"metrics/evaluate/{m}.json:accuracy": a for m, a in (accuracy or {}).items()}
    metrics.update(
        {f"metrics/train/{m}.json:train_minutes": 1.5 for m in accuracy or {}},
    )
    return Row(label, flatten(params), metrics)


def changed(**sections) -> dict:
    params = {
        key: dict(value) if isinstance(value, dict) else value for key, value in PARAMS.items()
    }
    for section, values in sections.items():
        params[section] = {**params[section], **values} if values else {}
    return params


def test_only_params_that_differ_are_columns_and_shortened():
    rows = [
        row("workspace", PARAMS),
        row("main", PARAMS),
        row("  fast-lr", changed(train={"lr": 0.003}), {"resnet": 0.41, "vit": 0.38}),
    ]
    columns = table(rows)
    labels = [c.label for c in columns]
    assert labels == ["Experiment", "lr", "resnet acc", "vit acc", "resnet min", "vit min"]
    assert columns[1].cells == ["0.001", "0.001", "0.003"]
    assert columns[2].cells == ["-", "-", "0.41"]


def test_a_preset_replacing_models_and_downloads_is_one_column_each():
    preset = changed(
        models={},
        downloads={},
        data={"source": "/data/cifar10-jpeg.tar.gz"},
        train={"epochs": 7, "batch_size": 1000},
    )
    preset["models"] = {"airbench": {"arch": "airbench", "pretrained": False}}
    rows = [row("workspace", PARAMS), row("  cpu-1", preset, {"airbench": 0.905})]
    labels = [c.label for c in table(rows)]
    assert labels[:2] == ["Experiment", "models"]  # which models run: the first thing to know
    assert "resnet.arch" not in labels and "airbench.arch" not in labels  # rows lack them
    assert labels.count("downloads") == 1 and not any("cifar10.url" in x for x in labels)
    assert labels.index("data.source") > labels.index("epochs")  # where the data lies: last
    models = next(c for c in table(rows) if c.label == "models")
    assert models.cells == ["resnet,vit", "airbench"]


def test_the_table_fits_its_width_dropping_the_least_important_first():
    many = {f"k{i}": 0.1 * i for i in range(12)}
    rows = [
        row("workspace", PARAMS),
        row("  wide", changed(train={"lr": 0.003, **many}), {"resnet": 0.4, "vit": 0.3}),
    ]
    columns = table(rows)
    shown, dropped = fit(columns, 80)
    lines = render_text(shown)
    assert max(len(line) for line in lines) <= 80
    assert [c.label for c in shown][:2] == ["Experiment", "lr"]
    assert "resnet acc" in [c.label for c in shown]  # a headline metric outranks late params
    assert dropped and all(c.priority >= 40 for c in dropped)
    assert not any("\N{HORIZONTAL ELLIPSIS}" in line for line in lines)  # no cut cells
    # the note naming what was left out keeps to the width too (a smoke run's was 483 wide)
    note = dropped_note(columns, dropped, 80).splitlines()
    assert len(note) > 1 and max(len(line) for line in note) <= 80
    assert " ".join(note).startswith("(not shown for the width of 80: ")
    assert all(c.label in " ".join(note) for c in dropped)


def test_long_values_are_cut_from_the_left_with_an_ascii_mark():
    rows = [row("workspace", PARAMS), row("  x", changed(data={"source": "/a/" + "b" * 60}))]
    source = next(c for c in table(rows) if c.label == "data.source")
    assert source.cells[1].startswith("...") and source.cells[1].endswith("bbb")
    assert len(source.cells[1]) <= 24


def test_experiments_sort_within_their_baseline():
    rows = [
        row("main", PARAMS),
        row("  a", changed(train={"lr": 0.01}), {"resnet": 0.3, "vit": 0.1}),
        row("  b", changed(train={"lr": 0.02}), {"resnet": 0.5, "vit": 0.1}),
        row("  c", changed(train={"lr": 0.03}), {"resnet": 0.4, "vit": 0.1}),
    ]
    columns = table(rows)
    sort_rows(rows, columns, "resnet acc", descending=True)
    assert columns[0].cells == ["main", "  b", "  c", "  a"]
    with pytest.raises(ParamsError, match="--sort: no column 'accuracy' \\(columns: lr, "):
        sort_rows(rows, columns, "accuracy", descending=False)


def smoke_rows() -> list[Row]:
    """A smoke run beside the baseline: three architectures changed, every headline metric."""
    smoke_models = {
        name: {"arch": f"test_{name}", "pretrained": False, "lr_scale": 1.0} for name in MODELS
    }
    rows = [
        row("workspace", PARAMS),
        row(
            "  smoke-1",
            changed(models=smoke_models, train={"epochs": 1, "lr": 0.003}),
            {"resnet": 0.41, "vit": 0.38},
        ),
    ]
    for model in MODELS:
        rows[1].metrics[f"metrics/train/{model}.json:best_val_loss"] = 1.9
    rows[1].metrics["metrics/compare.json:best_model"] = "ensemble"
    rows[1].metrics["metrics/compare.json:ensemble_accuracy"] = 0.44
    return rows


def test_the_verdict_outranks_the_architectures():
    """`run.sh show` after a smoke run hid best, ensemble, accuracies and val_loss and showed
    three *.arch columns."""
    columns = table(smoke_rows())
    shown, dropped = fit(columns, 80)
    labels = [c.label for c in shown]
    for wanted in ("best", "ensemble", "resnet acc", "vit acc", "lr"):
        assert wanted in labels, labels
    assert {"resnet.arch", "vit.arch"} <= {c.label for c in dropped}


def test_a_distillation_experiment_keeps_the_students_gain_before_the_ensemble():
    """The distill preset's table at 120 columns showed best, ensemble and three accuracies
    and named the student's gain, the experiment's point, among the hidden columns."""
    nets = ("airbench", "airbench_small", "airbench_small_kd")
    accuracies = dict(zip(nets, (0.9024, 0.8867, 0.8887), strict=True))
    rows = [row("main", PARAMS), row("  distill-20261205-081150", PARAMS, accuracies)]
    rows[1].metrics["metrics/compare.json:best_model"] = "airbench"
    rows[1].metrics["metrics/compare.json:ensemble_accuracy"] = 0.8974
    rows[1].metrics["metrics/compare.json:distill.airbench_small_kd.gain_over_baseline"] = 0.002
    shown, dropped = fit(table(rows), 120)
    labels = [c.label for c in shown]
    assert labels[:6] == [
        "Experiment",
        "best",
        "airbench acc",
        "airbench_small acc",
        "airbench_small_kd acc",
        "airbench_small_kd gain",
    ]
    assert "ensemble" in {c.label for c in dropped}
    shown, _ = fit(table(rows), 200)
    assert "ensemble" in [c.label for c in shown]  # when there is room


def test_a_sweep_s_searched_params_show_first():
    space = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}
    base = {**PARAMS, "tune": {"space": space}}
    rows = [row("main", base)]
    for index, lr in enumerate((0.001, 0.002)):
        params = {**base, "train": {**PARAMS["train"], "lr": lr, "epochs": 3 + index}}
        rows.append(row(f"  study-t00{index + 1}", params, {"resnet": 0.4 + index / 10}))
    shown, _ = fit(table(rows), 30)
    assert [c.label for c in shown] == ["Experiment", "lr"]


def test_outside_a_sweep_the_search_space_keys_do_not_push_the_accuracies_out():
    space = {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}
    base = {**PARAMS, "tune": {"space": space}}
    rows = [row("main", base)]
    for index, lr in enumerate((0.001, 0.002)):
        params = {**base, "train": {**PARAMS["train"], "lr": lr, "epochs": 3 + index}}
        rows.append(row(f"  exp-{index}", params, {"resnet": 0.4 + index / 10}))
    shown, _ = fit(table(rows), 26)
    assert [c.label for c in shown] == ["Experiment", "resnet acc"]  # lr and epochs dropped


def test_sorting_keeps_its_column_and_mixes_numbers_and_words():
    rows = smoke_rows()
    rows.append(row("  other", changed(train={"lr": "auto"}), {"resnet": 0.5}))
    columns = table(rows)
    sort_rows(rows, columns, "lr", descending=False)
    lr = next(c for c in columns if c.label == "lr")
    assert lr.cells == ["0.001", "0.003", "auto"]  # numbers by value, then words
    shown, _ = fit(columns, 40, keep="resnet min")
    assert "resnet min" in [c.label for c in shown]


@pytest.mark.parametrize(
    ("args", "said"),
    [(["--width", "0"], "--width: at least 40"), (["-n", "-1"], "-n/--num: at least 1")],
)
def test_options_out_of_range_are_one_line(tmp_path, args, said):
    result = run_module(tmp_path, "stages.show", *args)
    assert result.returncode == 2 and result.stderr.strip() == f"error: {said}" + (
        " characters, got 0" if "width" in said else " commit, got -1"
    )
