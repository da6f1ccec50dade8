"""The preflight's plan on a two-stage DVC project of its own: what runs, what is cached, what
DVC's run-cache restores, for a params text that is not written anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stages.common.plumbing.errors import StageError
from stages.common.preflight.plan import plan_run

PIPELINE = """\
stages:
  first:
    cmd: python -c "import yaml; print(yaml.safe_load(open('params.yaml'))['a'])" > first.txt
    params: [a]
    outs: [first.txt]
  second:
    cmd: python -c "print(open('first.txt').read())" > second.txt
    deps: [first.txt]
    params: [b]
    outs: [second.txt]
"""


def dvc(project: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        check=True,
        text=True,
        capture_output=True,
    )


@pytest.fixture
def pipeline(tmp_path, monkeypatch) -> Path:
    dvc(tmp_path, "init", "--no-scm")
    (tmp_path / "dvc.yaml").write_text(PIPELINE)
    (tmp_path / "params.yaml").write_text("a: 1\nb: 1\n")
    monkeypatch.chdir(tmp_path)  # the plan reads params.yaml where DVC runs: here
    return tmp_path


def plan(text: str, targets: list[str] | None = None) -> list[tuple[str, str, str]]:
    return [(s.name, s.action, s.reason) for s in plan_run(text, targets or [])]


def test_a_pipeline_never_run_runs_whole(pipeline):
    assert plan("a: 1\nb: 1\n") == [
        ("first", "run", "never run"),
        ("second", "run", "after first"),
    ]


def test_after_a_run_the_same_params_run_nothing(pipeline):
    dvc(pipeline, "repro")
    assert plan("a: 1\nb: 1\n") == [("first", "cached", ""), ("second", "cached", "")]


def test_a_change_runs_its_stage_and_those_below_it_only(pipeline):
    dvc(pipeline, "repro")
    assert plan("a: 1\nb: 2\n") == [("first", "cached", ""), ("second", "run", "changed")]
    assert plan("a: 2\nb: 1\n") == [("first", "run", "changed"), ("second", "run", "after first")]
    assert plan("a: 2\nb: 1\n", ["first"]) == [("first", "run", "changed")]


def test_params_a_run_has_seen_are_restored_from_the_run_cache(pipeline):
    dvc(pipeline, "repro")
    (pipeline / "params.yaml").write_text("a: 2\nb: 1\n")
    dvc(pipeline, "repro")
    assert plan("a: 1\nb: 1\n")[0] == ("first", "restore", "")


def test_the_plan_writes_nothing(pipeline):
    dvc(pipeline, "repro")
    before = {
        p: p.read_bytes() for p in pipeline.rglob("*") if p.is_file() and ".dvc" not in p.parts
    }
    plan("a: 5\nb: 5\n")
    after = {
        p: p.read_bytes() for p in pipeline.rglob("*") if p.is_file() and ".dvc" not in p.parts
    }
    assert after == before
    assert (pipeline / "params.yaml").read_text() == "a: 1\nb: 1\n"


def test_a_held_lock_is_one_error_saying_so(pipeline):
    from dvc.repo import Repo

    with Repo(str(pipeline)) as repo:
        repo.lock.lock()
        try:
            with pytest.raises(StageError, match="another DVC command is running"):
                plan_run("a: 1\nb: 1\n", [])
        finally:
            repo.lock.unlock()
