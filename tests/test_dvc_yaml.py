"""dvc.yaml against the code: every stage's code deps are exactly its import closure (written by
scripts/dvc_deps.py), and its outputs are exactly the paths stages/common/plumbing/output_paths.py
gives the code."""

from __future__ import annotations

import ast

import pytest
import yaml

from scripts import dvc_deps
from stages.common.plumbing import output_paths
from stages.common.plumbing.import_graph import imported_modules
from tests.conftest import ROOT

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = PIPELINE["stages"]


def test_packages_hold_no_code():
    for init in ROOT.glob("stages/**/__init__.py"):
        body = ast.parse(init.read_text()).body
        assert all(isinstance(node, ast.Expr) for node in body), f"{init} holds code"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_the_complete_import_closure(name):
    problems = dvc_deps.drifted(PIPELINE).get(name)
    assert problems is None, (
        f"dvc.yaml stage {name}: missing {problems[0]}, not imported {problems[1]}; "
        "run: python scripts/dvc_deps.py"
    )


def test_the_rerun_table_in_the_docs_is_current():
    document = dvc_deps.RERUN_DOC.read_text()
    assert dvc_deps.with_table(document, dvc_deps.rerun_table(PIPELINE)) == document, (
        "docs/pipeline.md's rerun table is stale; run: python scripts/dvc_deps.py"
    )


def test_only_the_plumbing_re_runs_every_stage():
    """Editing a module of a concern (the training schema, the checkpoint format, the plots)
    re-runs the stages of that concern, never the whole graph; what every stage imports is
    what starting one takes (stages/common/plumbing/)."""
    reruns = dvc_deps.reruns(PIPELINE)
    everywhere = {path for path, stages in reruns.items() if len(stages) == len(STAGES)}
    assert everywhere, "no module shared by every stage: the test would hold vacuously"
    outside = sorted(path for path in everywhere if not path.startswith("stages/common/plumbing/"))
    assert not outside, f"editing these re-runs every stage: {outside}"


def test_the_deps_writer_keeps_other_deps_and_their_place():
    deps = ["data/prepared", "stages/old.py", "stages/train.py", "metrics/validate.json"]
    code = ["stages/common/a.py", "stages/train.py"]
    assert dvc_deps.with_code_deps(deps, code) == [
        "data/prepared",
        "stages/common/a.py",
        "stages/train.py",
        "metrics/validate.json",
    ]
    assert dvc_deps.with_code_deps(["data/prepared"], code) == ["data/prepared", *code]


def test_a_type_checking_import_is_not_a_dep(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nfrom stages.common.plumbing import files\n"
        "if TYPE_CHECKING:\n    from stages.common.data.sources import RawDataset\n"
    )
    assert imported_modules(source) == {"stages.common.plumbing", "stages.common.plumbing.files"}


def outputs(name: str) -> set[str]:
    """Every path stage ``name`` declares as an output (outs, metrics, plots)."""
    stage = STAGES[name].get("do") or STAGES[name]
    return {path for kind in ("outs", "metrics", "plots") for path in declared(stage, kind)}


def test_stage_outputs_are_the_layout_paths():
    model = output_paths.paths("${key}")
    expected = {
        "prepare": {output_paths.PREPARED_DIR, output_paths.PREPARE_METRICS},
        "validate": {output_paths.VALIDATE_METRICS, output_paths.VALIDATION_REPORT},
        "eda": {output_paths.EDA_PLOTS, output_paths.EDA_REPORT, output_paths.EDA_DETAILS},
        "train": {
            model.model_dir,
            model.live_dir / "metrics.json",
            model.live_dir / "params.yaml",
            model.live_dir / "plots/metrics",
            model.train_metrics,
        },
        "evaluate": {
            model.predictions,
            model.evaluation_details,
            model.evaluate_metrics,
            model.evaluate_speed,
            model.evaluation_figures,
            model.evaluation_live / "plots/sklearn/confusion_matrix.json",
            model.evaluation_live / "plots/custom/risk_coverage.json",
        },
        "compare": {
            output_paths.RELEASE_DIR,
            output_paths.COMPARE_REPORT,
            output_paths.COMPARE_DETAILS,
            output_paths.COMPARE_METRICS,
            output_paths.COMPARE_PLOTS,
        },
        "export": {
            output_paths.ONNX_MODEL.parent,
            output_paths.EXPORT_METRICS,
            output_paths.EXPORT_LATENCY,
        },
    }
    for name, paths in expected.items():
        assert outputs(name) == {str(path) for path in paths}, name
    assert PIPELINE["artifacts"]["cifar10-classifier"]["path"] == str(
        output_paths.RELEASE_CHECKPOINT
    )


def declared(stage: dict, kind: str) -> dict[str, dict]:
    """path -> options of one kind of output (outs, metrics, plots)."""
    entries = stage.get(kind, [])
    return dict((e, {}) if isinstance(e, str) else next(iter(e.items())) for e in entries)


def test_metrics_and_plot_data_go_to_git_the_rest_to_the_remote():
    """Metrics and plot data are `cache: false` (git); data, models, predictions and images
    are cached (the DVC remote)."""
    for name, stage in STAGES.items():
        stage = stage.get("do") or stage
        for path, options in declared(stage, "metrics").items():
            assert path.startswith("metrics/") and options.get("cache") is False, (name, path)
        for path, options in declared(stage, "plots").items():
            small = path.startswith(("dvclive/", "evaluation/"))
            assert options.get("cache", True) is not small, (name, path)
        for path, options in declared(stage, "outs").items():
            if options.get("cache", True) is False:
                assert path.startswith("reports/"), (name, path)


@pytest.mark.parametrize("name", ["train", "evaluate", "prepare"])
def test_the_costly_stages_keep_dvcs_run_cache(name):
    """DVC saves no run-cache entry for a stage with a `cache: false` output other than a
    metric or a plot (dvc#8738): such a stage would re-run for inputs it has seen before."""
    stage = STAGES[name].get("do") or STAGES[name]
    uncached = [p for p, o in declared(stage, "outs").items() if o.get("cache", True) is False]
    assert uncached == [], (name, uncached)


def test_every_model_stage_comes_from_the_models_section():
    for name in ("train", "evaluate"):
        assert STAGES[name]["foreach"] == "${models}"
    assert STAGES["download"]["foreach"] == "${downloads}"
    assert "${data.source}" in STAGES["prepare"]["deps"]
