"""Optuna sweeps whose trials are DVC experiments: pruning, kill -9 and resume, two processes
sharing one study, and search spaces refused before any trial runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from stages.common.reporting.sweep_summary import TRUSTED_IMPORTANCE_TRIALS, draw_plots
from stages.common.tuning.sweep import Sweep
from tests.conftest import run_module, shipped
from tests.test_dvc_pipeline import commit_all, dvc, environment, init_repo, keep_models, tiny

pytestmark = pytest.mark.slow
STUDY = "sweep-resnet"


def sweep_environment(repo: Path) -> dict[str, str]:
    return {**environment(repo), "SWEEP_HEARTBEAT_SECONDS": "1"}


def start_sweep(repo: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stages.sweep", "resnet", *args],
        cwd=repo,
        env=sweep_environment(repo),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so a kill reaches DVC and training too
    )


def run_sweep(repo: Path, *args: str) -> str:
    process = start_sweep(repo, *args)
    output, _ = process.communicate(timeout=1800)
    assert process.returncode == 0, output
    return output


def study(repo: Path) -> optuna.Study:
    url = f"sqlite:///{repo / '.dvc/tmp/studies' / f'{STUDY}.db'}"
    return optuna.load_study(study_name=STUDY, storage=url)


@pytest.fixture
def sweep_repo(project: Path) -> Path:
    """One tiny model, data prepared and committed; a search space where a bad learning rate
    is likely, so that the pruner has work."""
    repo = init_repo(
        project,
        **tiny(),
        tune={
            "trials": 4,
            "epochs": 3,
            "startup_trials": 1,
            "space": {
                "train.lr": {"type": "float", "low": 0.0001, "high": 3.0, "log": True},
                "train.label_smoothing": {"type": "float", "low": 0.0, "high": 0.2},
            },
        },
    )
    keep_models(repo, ["resnet"])
    dvc(repo, "repro", "validate")
    # the parent commit's evaluation, as a team's baseline has it: no trial evaluates, so no
    # trial's experiment may show these numbers as its own
    for name in ("metrics/evaluate/resnet.json", "metrics/compare.json"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(json.dumps({"accuracy": 0.123, "best_model": "resnet"}))
    commit_all(repo, "data prepared, a baseline evaluated")
    return repo


def trial_metrics(repo: Path) -> dict[str, dict]:
    """Experiment name -> {metrics file: its numbers}, from `dvc exp show --json`."""
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment["revs"]:
                metrics = revision["data"]["metrics"]
                found[revision["name"]] = {
                    file: content["data"] for file, content in metrics.items() if "data" in content
                }
    return found


def test_a_sweep_with_pruning_records_every_trial_as_an_experiment(sweep_repo):
    output = run_sweep(sweep_repo)
    assert "trial 1 (0 of 4 done): train.lr=" in output and "best so far" in output
    assert "Warning" not in output  # Optuna's ExperimentalWarning said once per start
    trials = study(sweep_repo).trials
    states = [t.state for t in trials]
    assert len(trials) == 4 and optuna.trial.TrialState.FAIL not in states
    assert optuna.trial.TrialState.PRUNED in states, output
    table = dvc(sweep_repo, "exp", "show", "--csv").stdout
    for trial in trials:
        assert trial.user_attrs["experiment"] in table
    pruned = next(t for t in trials if t.state == optuna.trial.TrialState.PRUNED)
    assert len(pruned.intermediate_values) < 3  # it stopped early
    best = json.loads((sweep_repo / "sweeps" / STUDY / "best.json").read_text())
    # one numbering everywhere: trial N is experiment ...-t00N, "trial N" in the console
    assert best["experiment"] == f"{STUDY}-t{best['trial']:03d}"
    assert best["commands"]["apply"] == f"dvc exp apply {best['experiment']}"
    assert f"(trial {best['trial']})" in output
    assert (
        best["commands"]["rerun"] == f"{best['commands']['apply']} && bash run.sh --from-workspace"
    )
    keys = [override.partition("=")[0] for override in best["overrides"]]
    assert keys.count("train.lr") == 1 and keys.count("train.epochs") == 1, keys
    assert [t.user_attrs["experiment"] for t in trials] == [
        f"{STUDY}-t{n:03d}" for n in range(1, 5)
    ]
    for name in ("summary.md", "history.png"):
        assert (sweep_repo / "sweeps" / STUDY / name).exists()
    # each trial's row holds its own numbers, the objective among them, and not its parent's
    shown = trial_metrics(sweep_repo)
    for trial in trials:
        files = shown[trial.user_attrs["experiment"]]
        assert "metrics/evaluate/resnet.json" not in files and "metrics/compare.json" not in files
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert files["metrics/train/resnet.json"]["best_val_loss"] == pytest.approx(trial.value)
    # the experiments overlay in `dvc plots diff`, and the best one applies
    names = [t.user_attrs["experiment"] for t in trials[:2]]
    diff = json.loads(dvc(sweep_repo, "plots", "diff", *names, "--json", "--split").stdout)
    revisions = {
        rev
        for entry in diff["data"]["dvclive/resnet/plots/metrics/val/loss.tsv"]
        for rev in entry["revisions"]
    }
    assert revisions == set(names)
    # the trial ran train@resnet only: DVC reports the outputs of the stages it never ran
    # (eda, evaluate, compare) as "Checkout failed"; the params and the model are applied
    applied_run = dvc(sweep_repo, "exp", "apply", best["experiment"], check=False)
    if applied_run.returncode != 0:
        listing = applied_run.stderr.split("Checkout failed for following targets:")[-1]
        failed = [line.strip() for line in listing.splitlines() if line.strip()]
        failed = failed[: next(i for i, line in enumerate(failed) if line.startswith("Is your"))]
        assert failed, applied_run.stderr
        assert not any(path.startswith(("models/", "dvclive/", "data/")) for path in failed)
    assert (sweep_repo / "models/resnet/model.safetensors").exists()
    applied = yaml.safe_load((sweep_repo / "params.yaml").read_text())
    assert applied["train"]["lr"] == pytest.approx(best["params"]["train.lr"])
    # a finished study does nothing more when started again
    again = run_sweep(sweep_repo)
    assert "4 of 4 trials done" in again and len(study(sweep_repo).trials) == 4


def test_a_killed_sweep_continues_the_same_study(sweep_repo):
    process = start_sweep(sweep_repo, "--trials", "2")
    deadline = time.monotonic() + 600
    log = sweep_repo / "sweeps" / STUDY / f"{STUDY}-t001.log"
    while "Running stage 'train@resnet'" not in (log.read_text() if log.exists() else ""):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = study(sweep_repo).trials
    assert [t.state for t in interrupted] == [optuna.trial.TrialState.RUNNING]

    time.sleep(4)  # past the heartbeat's grace period (3 x 1 s)
    output = run_sweep(sweep_repo, "--trials", "2")
    trials = study(sweep_repo).trials
    finished = [
        t
        for t in trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert len(finished) == 2, output
    assert trials[0].state == optuna.trial.TrialState.FAIL  # the interrupted one, marked failed
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback
    retried = [t for t in trials if retry.retried_trial_number(t) == trials[0].number]
    assert len(retried) == 1 and retried[0].params == trials[0].params  # and re-queued
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))


def test_two_processes_share_one_study(sweep_repo):
    first = start_sweep(sweep_repo, "--trials", "2")
    time.sleep(3)  # the second joins a study with a trial under way
    second = start_sweep(sweep_repo, "--trials", "2")
    for process in (first, second):
        output, _ = process.communicate(timeout=1800)
        assert process.returncode == 0, output
    trials = study(sweep_repo).trials
    finished = [t for t in trials if t.state != optuna.trial.TrialState.FAIL]
    assert 2 <= len(finished) <= 3  # each stops once the study has its 2 (one may be mid-run)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert len({t.user_attrs["experiment"] for t in trials}) == len(trials)


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        (
            {"train.lrr": {"type": "float", "low": 0.1, "high": 1.0}},
            "error: tune.space.train.lrr: 'lrr' is not a key of train (did you mean 'lr'?)",
        ),
        (
            {"train.batch_size": {"type": "int", "low": 0, "high": 64}},
            "error: tune.space.train.batch_size: 0 is not a valid train.batch_size",
        ),
    ],
)
def test_a_bad_search_space_stops_before_any_trial(project, space, expected):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tune"]["space"] = space
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_module(project, "stages.sweep", "resnet")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [expected] or expected in result.stderr
    assert not (project / "sweeps").exists()


def test_importances_from_a_handful_of_trials_come_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2 + t.suggest_float("y", 0, 1), 5)
    sweep = Sweep(shipped(), {}, "resnet", "s", "sqlite://", 3, [])
    sweep.folder.mkdir(parents=True)
    few = draw_plots(sweep, study, complete=5)
    assert "Parameter importances from 5 complete trials say little" in " ".join(few)
    assert "![importances.png](importances.png)" in few
    many = draw_plots(sweep, study, complete=TRUSTED_IMPORTANCE_TRIALS)
    assert not any("say little" in line for line in many)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "sqlite:////proc/no-such-folder/study.db",
            "error: tune.storage: cannot open sqlite:////proc/no-such-folder/study.db "
            "(unable to open database file)",
        ),
        (
            "::no url::",
            "error: tune.storage: '::no url::' is neither a database URL (sqlite:///path, "
            "postgresql://user:password@host/database) nor a journal file",
        ),
        (
            "postgresql+pg8000://sweeper:secret@127.0.0.1:1/optuna",
            "error: tune.storage: postgresql+pg8000://sweeper:***@127.0.0.1:1/optuna needs the "
            "database driver 'pg8000', which is not installed (pip install -r requirements-remote",
        ),
    ],
)
def test_a_storage_that_cannot_be_used_stops_before_any_trial(project, monkeypatch, url, expected):
    monkeypatch.setenv("SWEEP_STORAGE", url)
    result = run_module(project, "stages.sweep", "resnet")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(expected) and "Traceback" not in result.stderr, lines
    assert "secret" not in result.stderr
    assert not (project / "sweeps").exists()
