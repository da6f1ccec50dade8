"""Scale-out on real services: a sweep two clones share through a real PostgreSQL server, and the
team loop through an S3 API (moto's server) as the DVC remote. Both run on 127.0.0.1 and are
stopped after (tests/services.py); CI installs PostgreSQL from Debian's packages."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests import services
from tests.conftest import needs
from tests.test_dvc_pipeline import baseline as baseline
from tests.test_dvc_pipeline import (
    commit_all,
    digest,
    dvc,
    environment,
    git,
    init_repo,
    keep_models,
    publish,
    tiny,
)

pytestmark = pytest.mark.slow
NO_POSTGRES = services.postgres_missing()
needs_postgres = needs(
    NO_POSTGRES and f"no PostgreSQL: {NO_POSTGRES}", required_by="CIFAR10_REQUIRE_SERVICES"
)
STUDY = "team-sweep"


@pytest.fixture(scope="module")
def postgres() -> Iterator[services.Postgres]:
    assert NO_POSTGRES is None, NO_POSTGRES
    folder = services.temporary_folder()
    server = services.Postgres(folder / "postgres", services.free_port()).start()
    yield server
    server.stop()
    shutil.rmtree(folder)


@pytest.fixture
def two_machines(project: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two clones of one origin, sharing one DVC remote (a directory): a tiny ResNet, the data
    prepared and pushed, a search space with a rate bad enough to prune."""
    first = init_repo(
        project,
        **tiny(),
        tune={
            "study": STUDY,
            "trials": 4,
            "epochs": 2,
            "startup_trials": 1,
            "space": {"train.lr": {"type": "float", "low": 0.0001, "high": 3.0, "log": True}},
        },
    )
    keep_models(first, ["resnet"])
    dvc(first, "repro", "validate")
    dvc(first, "remote", "add", "-d", "team", str(tmp_path / "dvc-remote"))
    commit_all(first, "data prepared, the team's remote")
    dvc(first, "push")
    origin = publish(first, tmp_path)
    second = tmp_path / "second"
    git(tmp_path, "clone", "-q", str(origin), str(second))
    dvc(second, "pull", "--allow-missing")  # the stages after validate have not run yet
    return first, second


def start_sweep(clone: Path, storage: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stages.sweep", "resnet", *args],
        cwd=clone,
        env={**environment(clone), "SWEEP_STORAGE": storage, "SWEEP_HEARTBEAT_SECONDS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=1800)
    assert process.returncode == 0, output
    return output


def experiments_in(clone: Path) -> set[str]:
    shown = json.loads(dvc(clone, "exp", "show", "--json").stdout)
    return {
        revision["name"]
        for baseline_row in shown
        for experiment in baseline_row.get("experiments") or []
        for revision in experiment["revs"]
    }


@needs_postgres
def test_two_clones_share_one_study_through_postgresql(postgres, two_machines):
    first, second = two_machines
    url = postgres.url()
    workers = [start_sweep(first, url), start_sweep(second, url)]
    outputs = [finish(worker) for worker in workers]
    study = optuna.load_study(study_name=STUDY, storage=url)
    trials = study.get_trials(deepcopy=False)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = [t for t in trials if t.state in finished]
    assert len(done) == len(trials) == 4, outputs  # the budget: no worker starts a fifth
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # each number once
    assert postgres.password not in "".join(outputs)  # the URL is logged with ***
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both machines worked on it
    names = {t.user_attrs["experiment"] for t in done}
    # each clone holds its own trials' experiments; git carries them to the other
    for clone in (first, second):
        dvc(clone, "exp", "push", "origin", "--all-commits")
    for clone in (first, second):
        dvc(clone, "exp", "pull", "origin", "--all-commits")
        assert names <= experiments_in(clone), clone
    # the study is the one record of the sweep: run again, either clone writes the one best
    again = finish(start_sweep(first, url))
    assert "4 of 4 trials done" in again
    best = json.loads((first / f"sweeps/{STUDY}/best.json").read_text())
    assert best["experiment"] == study.best_trial.user_attrs["experiment"]
    assert best["value"] == pytest.approx(study.best_value)


@needs_postgres
def test_a_killed_worker_s_trial_is_failed_and_retried_by_the_other(postgres, two_machines):
    first, second = two_machines
    url = postgres.url()
    killed = start_sweep(first, url, "--trials", "2", "-S", "tune.study=team-kill")
    log = first / "sweeps/team-kill/team-kill-t001.log"
    deadline = time.monotonic() + 600
    while "Running stage 'train@resnet'" not in (log.read_text() if log.exists() else ""):
        assert killed.poll() is None and time.monotonic() < deadline
        time.sleep(0.5)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    time.sleep(4)  # past the heartbeat's grace period (3 x 1 s)
    output = finish(start_sweep(second, url, "--trials", "2", "-S", "tune.study=team-kill"))
    trials = optuna.load_study(study_name="team-kill", storage=url).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL, output  # the killed worker's
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback
    retried = [t for t in trials if retry.retried_trial_number(t) == trials[0].number]
    assert len(retried) == 1 and retried[0].params == trials[0].params
    assert retried[0].user_attrs["worker"] != trials[0].user_attrs["worker"]  # the survivor
    finished = [t for t in trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == 2  # nothing counted twice
    assert len({t.number for t in trials}) == len(trials)


@needs_postgres
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"password": "not-the-password"},
            'password authentication failed for user "sweeper"',
        ),
        ({"port": 1}, "connection refused"),
        ({"driver": "postgresql+psycopg2"}, "needs the database driver 'psycopg2'"),  # not ours
    ],
)
def test_a_study_that_cannot_be_reached_stops_before_any_trial(postgres, project, change, expected):
    url = postgres.url(password=change.get("password"), port=change.get("port"))
    url = url.replace("postgresql+psycopg", change.get("driver", "postgresql+psycopg"))
    result = subprocess.run(
        [sys.executable, "-m", "stages.sweep", "resnet"],
        cwd=project,
        env={**environment(project), "SWEEP_STORAGE": url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tune.storage: "), result.stderr
    assert expected in lines[0].lower()
    assert postgres.password not in lines[0] and "not-the-password" not in lines[0]
    assert not (project / "sweeps").exists()


# --- the DVC remote in an S3 API ------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[services.S3]:
    server = services.S3(services.free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def team_repo(baseline: Path, tmp_path: Path) -> Path:
    """A copy of the pipeline tests' baseline repository (two tiny models, run and committed)."""
    return Path(shutil.copytree(baseline, tmp_path / "repo", symlinks=True))


def use_s3(clone: Path, s3: services.S3, secret: str | None = None, bucket: str | None = None):
    """The team's remote as an S3-compatible store: the URL and endpoint in .dvc/config
    (committed), the key in .dvc/config.local (each member's own)."""
    url = f"s3://{bucket or s3.bucket}/cifar10"
    dvc(clone, "remote", "add", "--force", "-d", "team", url)
    dvc(clone, "remote", "modify", "team", "endpointurl", s3.endpoint)
    dvc(clone, "remote", "modify", "--local", "team", "access_key_id", s3.access_key)
    dvc(clone, "remote", "modify", "--local", "team", "secret_access_key", secret or s3.secret_key)


def check_remote(clone: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stages.remote"],
        cwd=clone,
        env=environment(clone),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_team_loop_through_an_s3_api(team_repo, s3, tmp_path):
    alice = team_repo
    use_s3(alice, s3)
    assert "answers (empty: the first push fills it)" in check_remote(alice).stderr
    dvc(alice, "push", "--run-cache")
    commit_all(alice, "the team's remote: S3")
    origin = publish(alice, tmp_path)

    bob = tmp_path / "bob"
    git(tmp_path, "clone", "-q", str(origin), str(bob))
    use_s3(bob, s3)  # his own key, in his .dvc/config.local
    dvc(bob, "pull", "--run-cache")
    assert "Data and pipelines are up to date" in dvc(bob, "status").stdout
    assert digest(bob / "models/resnet/model.safetensors") == digest(
        alice / "models/resnet/model.safetensors"
    )

    # an experiment travels through git and the bucket
    dvc(alice, "exp", "run", "-n", "faster", "-S", "models.resnet.lr_scale=3")
    dvc(alice, "exp", "push", "origin", "faster")
    dvc(alice, "push", "--run-cache")
    dvc(bob, "exp", "pull", "origin", "faster")
    assert "faster" in experiments_in(bob)
    dvc(bob, "exp", "apply", "faster")
    assert digest(bob / "models/resnet/model.safetensors") == digest(
        alice / "models/resnet/model.safetensors"
    )

    # the merge-request job on a branch that commits the experiment: `dvc pull --run-cache`
    # from the bucket, and `dvc repro` runs nothing
    dvc(alice, "exp", "branch", "faster", "faster")
    git(alice, "push", "-q", "origin", "faster")
    carol = tmp_path / "carol"
    git(tmp_path, "clone", "-q", "-b", "faster", str(origin), str(carol))
    use_s3(carol, s3)
    dvc(carol, "pull", "--run-cache")
    rerun = dvc(carol, "repro").stdout
    assert "Running stage" not in rerun and "Data and pipelines are up to date" in rerun, rerun
    assert digest(carol / "models/resnet/model.safetensors") == digest(
        alice / "models/resnet/model.safetensors"
    )


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"secret": "not-the-secret"}, "the credentials were refused (Forbidden); check "),
        ({"bucket": "no-such-bucket"}, "the bucket 'no-such-bucket' does not exist; create it"),
    ],
)
def test_a_refused_key_or_a_missing_bucket_is_one_line_and_nothing_is_pushed(
    team_repo, s3, setting, expected
):
    repo = team_repo
    use_s3(repo, s3, **setting)
    before = s3.objects()
    checked = check_remote(repo)
    assert checked.returncode == 1
    lines = checked.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], checked.stderr
    assert lines[0].startswith(f"error: remote 'team' (s3://{setting.get('bucket', s3.bucket)}")
    assert "not-the-secret" not in checked.stderr
    pushed = dvc(repo, "push", check=False)
    assert pushed.returncode != 0 and s3.objects() == before  # nothing half-pushed
