"""The real `dvc` in temporary git repositories: the pipeline, experiments, a remote round trip
between two team members' clones, queued experiments, and the source data as a dependency."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests import synthetic
from tests.conftest import (
    ROOT,
    RUN_SH_FILES,
    copy_files,
    copy_project,
    offline_data,
    tiny_training_params,
    update_params,
)

pytestmark = pytest.mark.slow


def environment(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(project),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }


def dvc(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=project,
        env=environment(project),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def git(project: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=project, env=environment(project), capture_output=True, text=True
    )
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def init_repo(project: Path, **params) -> Path:
    """git + dvc initialised in ``project`` (the repository's own .dvc/config, .gitignore and
    .dvcignore), params updated, everything committed on main."""
    git(project, "init", "-q", "-b", "main")
    dvc(project, "init", "-q")
    shutil.copy(ROOT / ".dvc/config", project / ".dvc/config")
    update_params(project, **params)
    git(project, "add", ".")
    git(project, "commit", "-qm", "init")
    return project


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-qm", message)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny(**extra) -> dict:
    sections = tiny_training_params(epochs=1)
    sections["evaluate"].update(tsne_samples=60, gradcam_samples=4, grid_size=8)
    return {**sections, "export": {"latency_runs": 3, "latency_batches": [1, 8]}, **extra}


def test_data_stages_run_once_and_survive_bad_params(project):
    repo = init_repo(project, validate={"drift_tolerance": 1.0})
    dvc(repo, "repro", "eda")
    assert (repo / "plots/eda/samples.png").exists()
    assert "Data and pipelines are up to date" in dvc(repo, "repro", "eda").stdout
    shown = dvc(repo, "metrics", "show").stdout
    assert "metrics/validate.json" in shown and "metrics/prepare.json" in shown
    assert "plots/eda/samples.png" in dvc(repo, "plots", "show", "--json").stdout
    prepared = digest(repo / "data/prepared/cifar10.npz")
    commit_all(repo, "data stages")

    update_params(repo, data={"val_ratio": 1.5})
    failed = dvc(repo, "repro", "eda", check=False)
    assert failed.returncode != 0
    assert "data.val_ratio: Input should be less than 1 (got 1.5)" in failed.stderr
    # DVC removed the stage's outputs before running it: git brings back the small ones
    # (metrics, cache: false) and params.yaml, the DVC cache the data.
    git(repo, "checkout", "--", ".")
    dvc(repo, "checkout", "prepare")
    assert digest(repo / "data/prepared/cifar10.npz") == prepared
    assert "Data and pipelines are up to date" in dvc(repo, "repro", "eda").stdout


def test_an_edit_of_the_source_data_reruns_prepare(project, image_folder, tmp_path):
    source = shutil.copytree(image_folder, tmp_path / "source")
    repo = init_repo(project, validate={"drift_tolerance": 1.0}, **offline_data(source))
    dvc(repo, "repro", "validate")
    assert "Data and pipelines are up to date" in dvc(repo, "repro", "validate").stdout

    extra = source / "train/cat/extra.png"
    extra.write_bytes(synthetic.png_bytes(synthetic.make_images(1, 9)[0][3]))
    status = dvc(repo, "status").stdout
    assert "prepare:" in status and "modified:" in status and str(source) in status
    dvc(repo, "repro", "validate")
    manifest = json.loads((repo / "data/prepared/manifest.json").read_text())
    assert manifest["counts"]["train"] + manifest["counts"]["val"] == 301

    shutil.rmtree(source / "test/horse")
    assert "prepare:" in dvc(repo, "status").stdout
    failed = dvc(repo, "repro", "validate", check=False)
    assert failed.returncode != 0
    assert "class 'horse' is missing from test" in failed.stderr


def test_the_same_data_moved_elsewhere_reruns_prepare_only(project, image_tar, tmp_path):
    """prepare's outputs say nothing of where the source lay: the stages after it stay cached."""
    first = tmp_path / "here" / "cifar.tar.gz"
    first.parent.mkdir()
    shutil.copy(image_tar, first)
    repo = init_repo(project, validate={"drift_tolerance": 1.0}, **offline_data(first))
    dvc(repo, "repro", "eda")
    prepared = digest(repo / "data/prepared/manifest.json")
    moved = tmp_path / "there" / "renamed.tar.gz"
    moved.parent.mkdir()
    shutil.move(first, moved)
    update_params(repo, data={"source": str(moved)})
    run = dvc(repo, "repro", "eda").stdout
    assert "Running stage 'prepare'" in run
    assert "Stage 'validate' didn't change, skipping" in run
    assert "Stage 'eda' didn't change, skipping" in run
    assert digest(repo / "data/prepared/manifest.json") == prepared


def test_dvc_warnings_about_outputs_never_produced_become_one_note(project):
    """`dvc exp run` on a clone whose dvc.lock records nothing (main carries no run) warns once
    per output it cannot restore; run.sh's exp_run says it once."""
    repo = init_repo(project, validate={"drift_tolerance": 1.0})
    result = subprocess.run(
        [sys.executable, "-m", "stages.exp_run", "-S", "eda.hist_bins=32", "eda"],
        cwd=repo,
        env=environment(repo),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert "Running stage 'eda'" in result.stdout
    assert "No file hash info found" not in result.stdout + result.stderr
    note = "note: outputs never produced in this clone have no recorded version to restore"
    assert (result.stdout + result.stderr).count(note) == 1
    plain = dvc(repo, "exp", "run", "-S", "eda.hist_bins=16", "eda", check=False)
    assert "No file hash info found" not in plain.stdout + plain.stderr  # recorded now


def test_the_download_stage_fetches_verifies_and_feeds_prepare(project, image_tar, tmp_path):
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(image_tar, served / "cifar.tar.gz")

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cifar.tar.gz"
    md5 = hashlib.md5(image_tar.read_bytes()).hexdigest()
    entry = {"url": url, "md5": md5, "path": "data/raw/cifar.tar.gz"}
    try:
        repo = init_repo(
            project,
            downloads={"mirror": entry},
            data={"source": "data/raw/cifar.tar.gz"},
            validate={"drift_tolerance": 1.0},
        )
        run = dvc(repo, "repro", "prepare")
        assert "Running stage 'download@mirror'" in run.stdout
        assert digest(repo / "data/raw/cifar.tar.gz") == digest(image_tar)
        assert "download@mirror" in (repo / "dvc.lock").read_text()
        # a file that changed at its source is refused, and nothing half-written stays
        update_params(repo, downloads={"mirror": {**entry, "md5": "0" * 32}})
        failed = dvc(repo, "repro", "prepare", check=False)
        assert failed.returncode != 0
        assert f"does not have the MD5 {'0' * 32}" in failed.stderr
        assert not list((repo / "data/raw").glob(".cifar.tar.gz*"))
    finally:
        server.shutdown()
    # offline (nothing listens there): one line, and the first command to try instead
    offline_url = "http://127.0.0.1:9/cifar.tar.gz"
    update_params(repo, downloads={"mirror": {**entry, "url": offline_url}})
    offline = dvc(repo, "repro", "prepare", check=False)
    assert offline.returncode != 0
    line = next(line for line in offline.stderr.splitlines() if "downloads.mirror" in line)
    assert f"fetching {offline_url} failed" in line
    assert "`bash run.sh --preset smoke --data PATH`" in line


def publish(repo: Path, folder: Path) -> Path:
    """A bare git repository at folder/origin.git, ``repo``'s remote `origin`, with main pushed."""
    origin = folder / "origin.git"
    git(folder, "init", "-q", "--bare", "-b", "main", str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    return origin


def exp_show_columns(repo: Path, *args: str) -> list[str]:
    table = dvc(repo, "exp", "show", "--only-changed", "--csv", *args).stdout
    return next(csv.reader(io.StringIO(table)))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, image_tar) -> Path:
    """Two tiny models (resnet, vit) run through the whole pipeline and committed on main: the
    starting point the experiment tests copy (git, DVC cache and all), so that the pipeline's
    dozen stage processes run once for all of them."""
    project = copy_project(tmp_path_factory.mktemp("baseline") / "repo")
    update_params(project, **offline_data(image_tar))
    repo = init_repo(project, **tiny())
    keep_models(repo, ["resnet", "vit"])
    run = dvc(repo, "repro")
    for stage in ("prepare", "validate", "eda", "train@vit", "evaluate@vit", "compare", "export"):
        assert f"Running stage '{stage}'" in run.stdout, run.stdout
    commit_all(repo, "baseline")
    return repo


@pytest.fixture
def repo(baseline, tmp_path) -> Path:
    """A copy of the baseline repository."""
    return Path(shutil.copytree(baseline, tmp_path / "repo", symlinks=True))


def test_full_pipeline_another_model_and_experiments(repo):
    assert "Data and pipelines are up to date" in dvc(repo, "repro").stdout
    comparison = json.loads((repo / "reports/comparison.json").read_text())["rows"]
    assert [row["model"] for row in comparison] == ["resnet", "vit", "ensemble"]
    # another model is an edit of params.yaml alone; the others are not touched
    update_params(
        repo,
        models={"resnet_b": {"arch": "test_resnet", "pretrained": False, "img_size": 32}},
    )
    run = dvc(repo, "repro")
    assert "Running stage 'train@resnet_b'" in run.stdout
    assert "Stage 'train@resnet' didn't change, skipping" in run.stdout
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert files["metrics/export.json"]["data"]["top1_agreement"] == 1.0  # export ran after compare
    assert set(files["metrics/evaluate/resnet_b.json"]["data"]) == {
        "accuracy",
        "f1_weighted",
        "loss",
        "ece",
        "ece_scaled",
        "mca",
        "mca_drop",
    }
    comparison = json.loads((repo / "reports/comparison.json").read_text())["rows"]
    assert [row["model"] for row in comparison] == ["resnet", "vit", "resnet_b", "ensemble"]
    plots = json.loads(dvc(repo, "plots", "show", "--json", "--split").stdout)["data"]
    assert "dvclive/resnet_b/plots/metrics/val/loss.tsv" in plots
    assert "evaluation/vit/live/plots/sklearn/confusion_matrix.json" in plots
    assert "plots/compare/comparison.png" in plots
    commit_all(repo, "a third model")

    # a change to one model's section re-runs only that branch (and compare)
    only_vit = dvc(repo, "exp", "run", "-n", "vit-scale", "-S", "models.vit.lr_scale=3")
    assert "Stage 'train@resnet' didn't change, skipping" in only_vit.stdout
    assert "Running stage 'train@vit'" in only_vit.stdout
    columns = exp_show_columns(repo)
    # fits a wide terminal: 41 since evaluate added mca, mca_drop and robustness_seconds
    assert len(columns) <= 44, (len(columns), columns)
    assert "models.vit.lr_scale" in columns and "metrics/evaluate/vit.json:accuracy" in columns
    assert not any("per_class" in column or "drift" in column for column in columns)
    diff = json.loads(dvc(repo, "plots", "diff", "HEAD", "vit-scale", "--json", "--split").stdout)
    for name in (
        "dvclive/vit/plots/metrics/val/loss.tsv",
        "evaluation/vit/live/plots/sklearn/confusion_matrix.json",
    ):
        revisions = {rev for entry in diff["data"][name] for rev in entry["revisions"]}
        assert revisions == {"HEAD", "vit-scale"}, (name, revisions)

    # a shared train key moves every model (each at its own scale: tests/test_params.py);
    # DVC names the section each train stage depends on
    git(repo, "checkout", "--", ".")
    dvc(repo, "checkout")
    update_params(repo, train={"lr": 0.002})
    status = json.loads(dvc(repo, "status", "--json").stdout)
    for model in ("resnet", "vit", "resnet_b"):
        assert status[f"train@{model}"] == [
            {"changed deps": {"params.yaml": {"train": "modified"}}}
        ], status


# The README's `dvc exp show` recipes ("Experiments"): every column but the hashes, and only
# the columns named.
WITHOUT_HASHES = "Created|^[^:]*/[^:]*$|^(dvclive|evaluation|models|release)$"
ONLY_THESE = "Experiment|train\\.(lr|epochs)$|(.*:)?accuracy$|(.*:)?best_model$"


def stage_command(repo: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=repo,
        env=environment(repo),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_the_plan_before_a_run_and_the_table_after_it(repo):
    # nothing changed since the baseline: nothing runs, nothing is timed
    unchanged = stage_command(repo, "stages.preflight").stdout
    assert "will run" not in unchanged and "cost: no model trains" in unchanged
    assert re.search(r"cached: +prepare, validate, eda, train@resnet,", unchanged)
    # a shared train key: both models, what follows them, and only that
    planned = stage_command(repo, "stages.preflight", "-S", "train.lr=0.002").stdout
    assert re.search(r"cached: +prepare, validate, eda\n", planned), planned
    assert "train@resnet (changed), train@vit (changed), evaluate@resnet" in planned
    assert "compare" in planned.split("will run:")[1]
    assert re.search(r"^  resnet +test_resnet at 32 px", planned, re.M)

    before = stage_command(repo, "stages.show").stdout
    assert [line.split()[0] for line in before.splitlines()[1:3]] == ["workspace", "main"]
    stage_command(repo, "stages.exp_run", "-n", "lr2", "-S", "train.lr=0.002")
    table = stage_command(repo, "stages.show").stdout.splitlines()
    assert max(len(line) for line in table) <= 120
    header = table[0].split()
    assert header[:2] == ["Experiment", "lr"] and "acc" in header
    assert not any("/" in label or label.endswith(".py") for label in header)
    experiment = next(line for line in table if line.startswith("  lr2"))
    assert experiment.split()[1] == "0.002"
    assert stage_command(repo, "stages.show", "--md").stdout.startswith("| Experiment | lr |")

    # back to the baseline's rate: DVC's run-cache holds both models' training for it
    update_params(repo, train={"lr": 0.001})
    restored = stage_command(repo, "stages.preflight").stdout
    assert re.search(r"restored from the run-cache: +train@resnet, train@vit\n", restored)
    assert re.search(r"will run: +evaluate@resnet, evaluate@vit, compare, export\n", restored)
    assert "cost: no model trains" in restored

    # the README's recipes for `dvc exp show`
    columns = exp_show_columns(repo, "--drop", WITHOUT_HASHES)
    assert "train.lr" in columns and "metrics/evaluate/vit.json:accuracy" in columns
    assert not any(c.endswith(".py") or c.startswith(("data/", "models/")) for c in columns)
    assert "release" not in columns
    kept = exp_show_columns(repo, "--drop", ".*", "--keep", ONLY_THESE)
    assert set(kept) == {
        "Experiment",
        "train.lr",
        "train.epochs",
        "metrics/evaluate/resnet.json:accuracy",
        "metrics/evaluate/vit.json:accuracy",
        "best_model",
    }, kept
    readme = (ROOT / "README.md").read_text()
    assert WITHOUT_HASHES in readme and ONLY_THESE in readme


def test_team_round_trip_through_a_remote(repo, tmp_path):
    """Member A (the baseline's author) pushes; a fresh clone sees the results without
    pulling; member B pulls everything and finds it up to date; experiments travel too."""
    storage = tmp_path / "dvc-storage"
    alice = repo
    dvc(alice, "remote", "add", "-d", "storage", str(storage))
    dvc(alice, "push")
    commit_all(alice, "configure the remote")
    origin = publish(alice, tmp_path)

    # a fresh clone sees the committed results without pulling anything
    reader = tmp_path / "reader"
    git(tmp_path, "clone", "-q", str(origin), str(reader))
    metrics = dvc(reader, "metrics", "show").stdout
    assert "metrics/evaluate/resnet.json" in metrics and "accuracy" in metrics
    assert dvc(reader, "metrics", "diff", "main").returncode == 0
    plots = json.loads(dvc(reader, "plots", "diff", "main", "--json", "--split").stdout)
    assert plots["data"]["dvclive/resnet/plots/metrics/val/loss.tsv"]
    table = dvc(reader, "exp", "show", "--csv").stdout
    assert "main" in table and "DVC failed" not in table

    # member B pulls: everything is there and up to date
    bob = tmp_path / "bob"
    git(tmp_path, "clone", "-q", str(origin), str(bob))
    dvc(bob, "pull")
    assert "Data and pipelines are up to date" in dvc(bob, "status").stdout
    for path in ("models/resnet/model.safetensors", "data/prepared/cifar10.npz"):
        assert digest(bob / path) == digest(alice / path)

    # an experiment travels from A to B
    dvc(alice, "exp", "run", "-n", "faster", "-S", "models.resnet.lr_scale=3")
    dvc(alice, "exp", "push", "origin", "faster")
    dvc(bob, "exp", "pull", "origin", "faster")
    assert "faster" in dvc(bob, "exp", "show", "--csv").stdout
    dvc(bob, "exp", "apply", "faster")
    assert yaml.safe_load((bob / "params.yaml").read_text())["models"]["resnet"]["lr_scale"] == 3
    assert digest(bob / "models/resnet/model.safetensors") == digest(
        alice / "models/resnet/model.safetensors"
    )


def keep_models(project: Path, names: list[str]) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["models"] = {name: params["models"][name] for name in names}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_queued_experiments_run_in_parallel(repo):
    dvc(repo, "exp", "run", "--queue", "-S", "models.resnet.lr_scale=0.5,2")
    dvc(repo, "queue", "start", "-j", "2")
    deadline = time.monotonic() + 1200
    while any(state in dvc(repo, "queue", "status").stdout for state in ("Queued", "Running")):
        assert time.monotonic() < deadline, dvc(repo, "queue", "status").stdout
        time.sleep(3)
    dvc(repo, "queue", "stop", check=False)
    table = list(csv.DictReader(io.StringIO(dvc(repo, "exp", "show", "--csv").stdout)))
    results = {
        row["models.resnet.lr_scale"]: row["metrics/evaluate/resnet.json:accuracy"]
        for row in table
        if row["Experiment"] and row["State"] in ("", "Success")
    }
    assert set(results) >= {"0.5", "2"}, table
    assert all(float(value) > 0 for value in results.values())


def with_run_sh(repo: Path) -> Path:
    """``repo`` with run.sh and what it needs, committed."""
    copy_files(repo, RUN_SH_FILES)
    commit_all(repo, "run.sh")
    return repo


def run_sh(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**environment(repo), "CIFAR10_VENV": str(Path(sys.executable).parent.parent)}
    result = subprocess.run(
        ["bash", "run.sh", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, f"run.sh {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_a_run_starts_from_the_committed_params_not_the_last_experiment(repo):
    """After `dvc exp run` the workspace holds that experiment's params; the next run.sh run
    starts from the committed file, says what differs and from where, and keeps a hand edit."""
    with_run_sh(repo)
    first = run_sh(repo, "1", "resnet")
    assert "params: as committed" in first.stdout and "note:" not in first.stdout
    # what another experiment (or a hand edit) left in the workspace since
    update_params(repo, train={"amp": False, "label_smoothing": 0.05})
    left = (repo / "params.yaml").read_text()

    second = run_sh(repo, "1", "resnet", "-S", "train.lr=0.003")
    assert re.search(
        r"^params that differ from the committed params.yaml \(1 from -S\):\n"
        r"  train.lr  0.001 -> 0.003  -S$",
        second.stdout,
        re.M,
    ), second.stdout
    assert re.search(
        r"note: the workspace's params.yaml differs from the committed one in "
        r"train.amp, train.label_smoothing; this run starts from the committed file",
        second.stdout,
    ), second.stdout
    saved = re.search(r"note: the workspace's own params.yaml is saved as (\S+)", second.stdout)
    assert saved and (repo / saved.group(1)).read_text() == left
    names = [re.search(r"Ran experiment\(s\): (\S+)", run.stdout) for run in (first, second)]
    assert all(names), (first.stdout, second.stdout)
    diff = json.loads(
        dvc(repo, "params", "diff", names[0].group(1), names[1].group(1), "--json").stdout
    )
    assert list(diff) == ["params.yaml"] and list(diff["params.yaml"]) == ["train.lr"], diff
    assert diff["params.yaml"]["train.lr"]["new"] == 0.003


def test_a_run_that_fails_in_a_stage_loses_no_output(repo, tmp_path):
    """A source prepare refuses mid-way (a corrupt image, on_bad_image: fail): DVC deleted
    data/prepared and metrics/prepare.json first, and the git-kept one was lost unless
    committed."""
    with_run_sh(repo)
    kept = {
        path: (repo / path).read_bytes()
        for path in ("metrics/prepare.json", "reports/validation.json")
    }
    kept_data = digest(repo / "data/prepared/cifar10.npz")
    (repo / "metrics/prepare.json").write_text(kept["metrics/prepare.json"].decode() + "\n")
    kept["metrics/prepare.json"] += b"\n"  # an uncommitted change git cannot bring back
    source = synthetic.write_image_folder(tmp_path / "source", 30, 10)
    (source / "train/cat/0000.png").write_bytes(b"\x89PNG broken")
    env = {**environment(repo), "CIFAR10_VENV": str(Path(sys.executable).parent.parent)}
    failed = subprocess.run(
        ["bash", "run.sh", "1", "resnet", "--data", str(source), "-S", "data.on_bad_image=fail"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert failed.returncode != 0, failed.stdout
    assert "train/cat/0000.png" in failed.stderr and "fatal" in failed.stderr
    assert "note: the run failed; put back" in failed.stderr
    for path, content in kept.items():
        assert (repo / path).read_bytes() == content, path
    assert digest(repo / "data/prepared/cifar10.npz") == kept_data
