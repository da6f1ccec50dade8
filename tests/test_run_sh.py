"""`run.sh` before DVC starts. Bad arguments or settings: one `error:` line, exit code 2, and
nothing touched: params.yaml byte for byte as it was, no stage run, no output deleted (the README's
bad-input section counts the cases of every test table). The dry run and the cost gate: what would
run and what it would cost, nothing changed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import torch

from benchmarks.estimate import busy
from tests import synthetic
from tests.conftest import (
    ROOT,
    RUN_SH_FILES,
    copy_project,
    offline_data,
    tiny_training_params,
    update_params,
)

STEPS = list(range(1, 17))  # more unfreezing steps than test_vit has layer groups
CASES = [
    (["abc"], "EPOCHS must be a whole number >= 1, got 'abc'"),
    (["-1"], "EPOCHS must be a whole number >= 1, got '-1'"),
    (["0"], "EPOCHS must be a whole number >= 1, got '0'"),
    (["3", "resnet", "deploy"], "mode must be 'train' or 'sweep', got 'deploy'"),
    (["3", "all", "sweep"], "a sweep tunes one model"),
    (["3", "resnt"], "models.resnt: no such model"),
    (["1", "2", "3", "4"], "too many arguments"),
    (["--bogus"], "unknown option '--bogus'"),
    (["--preset", "nosuch"], "preset 'nosuch': no presets/nosuch.yaml"),
    (["-S", "train.lrr=0.1"], "train.lrr"),
    (["-S", "train.lr=-1"], "train.lr"),
    (["-S", "train.lr"], "-S train.lr"),
    (
        ["-S", "models.resnet.freezing.strategy=partial", "-S", "models.resnet.freezing.groups=99"],
        "models.resnet.freezing.groups",
    ),
    (
        [
            "-S",
            "models.vit.freezing.strategy=progressive",
            "-S",
            f"models.vit.freezing.schedule={STEPS}",
        ],
        "models.vit.freezing.schedule",
    ),
    (["-S", "data.subset=12", "-S", "train.batch_size=200"], "train.batch_size"),
    (["-S", "data.subset=6"], "class 'airplane' has 6 training image(s), too few for a strat"),
    (["-S", "data.val_ratio=0.0001"], "(needs data.val_ratio between"),
    (["-S", "train.lr=inf"], "train.lr: Input should be a finite number"),
    (["-S", "train.grad_clip=nan"], "train.grad_clip: Input should be a finite number"),
    (["--dry-run", "--bogus"], "unknown option '--bogus'"),
    (
        ["-S", "~models.resnet", "-S", "~models.efficientnet", "-S", "~models.vit"],
        "models: no models: name at least one",
    ),
    (["-S", "seed=-1"], "seed: Input should be greater than or equal to 0"),
    (["-S", "train.lrr=0.1"], "-S train.lrr=0.1: 'lrr' is not a key of train (did you mean 'lr'?)"),
    (  # a preset's ~20 overrides were all printed before the real error
        ["--preset", "smoke", "-S", "train.lrr=0.1"],
        "error: -S train.lrr=0.1: 'lrr' is not a key of train (did you mean 'lr'?)",
    ),
    (["-S", "tune.space.train.lr.low=0.1"], "tune.space's keys hold dots, as in 'train.lr'"),
    (
        [
            "-S",
            "~tune.space",
            "-S",
            "+tune.space={models.resnet.arch: {type: categorical, choices: [resnet50, nosuchnet]}}",
        ],
        "tune.space.models.resnet.arch: unknown timm architecture 'nosuchnet'",
    ),
    (
        [
            "-S",
            "~tune.space",
            "-S",
            "+tune.space={train.batch_size: {type: int, low: 8, high: 32, step: 0.5}}",
        ],
        "tune.space.train.batch_size.step: an int range needs a whole step, got 0.5",
    ),
    (["-S", "data.source=/data/ünï.tar"], "needs quotes: -S 'data.source=\"/data/ü x.tar\"'"),
    (["-S", "data.source=loop-source"], "is a symbolic link loop; remove or fix it"),
    (["--data", "no/such/copy.tar.gz"], "data.source: 'no/such/copy.tar.gz' does not exist (in "),
    (["-S", "models.resnet.pretrained=/no/such/weights.safetensors"], "models.resnet.pretrained"),
    (["-S", "data.source=/no/such/cifar.tar.gz"], "data.source"),
    # sources prepare would refuse, found before DVC deletes anything (and before it hashes
    # them: /dev/zero was read for ten minutes)
    (["--data", "/dev/zero"], "data.source: '/dev/zero' is a character device, not a file or"),
    (["--data", "bad/empty.tar"], "data.source: 'bad/empty.tar' has no train/<class>/ folders"),
    (["--data", "bad/no-test"], "data.source: 'bad/no-test' has no test/cat/ folder"),
    (
        ["--data", "bad/notes.txt"],
        "'bad/notes.txt' is not a .tar/.tar.gz archive or a folder (it looks like text)",
    ),
    (["--data", "bad/zip.tar.gz"], "(it looks like a zip archive)"),
    (
        ["--data", "bad/three.tar.gz"],
        "'bad/three.tar.gz' holds 3 classes (airplane, automobile, bird), not CIFAR-10's ten",
    ),
]


@pytest.fixture(scope="module")
def clone(tmp_path_factory, image_tar) -> Path:
    """A git clone of the project, offline data, tiny models and one finished output."""
    project = copy_project(tmp_path_factory.mktemp("run_sh") / "project", RUN_SH_FILES)
    update_params(project, **offline_data(image_tar), **tiny_training_params())
    (project / "models/resnet").mkdir(parents=True)
    (project / "models/resnet/model.safetensors").write_bytes(b"earlier results")
    bad = project / "bad"
    (bad / "no-test/train/cat").mkdir(parents=True)
    (bad / "no-test/train/cat/0.png").write_bytes(
        synthetic.png_bytes(synthetic.make_images(1, 0)[0][0])
    )
    with tarfile.open(bad / "empty.tar", "w"):
        pass
    (bad / "notes.txt").write_text("not a data set\n")
    with zipfile.ZipFile(bad / "zip.tar.gz", "w") as archive:
        archive.writestr("train/cat/0.png", b"x")
    three = synthetic.write_image_folder(
        tmp_path_factory.mktemp("three") / "data", 12, 4, classes=3
    )
    synthetic.write_tar(three, bad / "three.tar.gz")
    loop = project / "loop-source" / "train"
    loop.mkdir(parents=True)
    (loop / "a").symlink_to("b")
    (loop / "b").symlink_to("a")
    (project / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(ROOT / ".dvc" / name, project / ".dvc" / name)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    return project


def run_sh(clone: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "CIFAR10_VENV": str(Path(sys.executable).parent.parent),
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("CIFAR10_ALLOW_SLOW", None)
    return subprocess.run(
        ["bash", "run.sh", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )


def snapshot(clone: Path) -> dict[str, tuple[int, int]]:
    """Every file of the clone outside .git and DVC's own tmp/state: size and mtime."""
    return {
        str(path.relative_to(clone)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in clone.rglob("*")
        if path.is_file() and not {".git", "tmp", "__pycache__"} & set(path.parts)
    }


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_run_is_one_line_exit_2_and_touches_nothing(clone, args, expected):
    params_before = (clone / "params.yaml").read_bytes()
    result = run_sh(clone, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:"), result.stderr
    assert expected in errors[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert (clone / "params.yaml").read_bytes() == params_before
    assert (clone / "models/resnet/model.safetensors").read_bytes() == b"earlier results"
    assert not (clone / "dvc.lock").exists() and not (clone / "data/prepared").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the gate is for machines without a GPU")
def test_a_dry_run_says_what_would_run_and_what_it_costs_and_changes_nothing(clone):
    before = snapshot(clone)
    result = run_sh(clone, "2", "--dry-run", "-S", "train.lr=0.002")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "plan (" in out and "will run:" in out and "prepare (never run)" in out
    for model in ("resnet", "efficientnet", "vit"):
        assert f"train@{model}" in out
        assert re.search(rf"^  {model} +test_\w+ at 32 px, batch 32: .* for 2 epochs$", out, re.M)
    assert re.search(r"estimated training time on this CPU \(steps timed for \d+ s\)", out)
    assert re.search(
        r"^params that differ from the committed params.yaml \(1 from -S\):\n"
        r"  train.lr  0.001 -> 0.002  -S$",
        out,
        re.M,
    )
    assert "total:" in out and out.strip().endswith("dry run: nothing was run or changed")
    assert snapshot(clone) == before


@pytest.mark.slow  # times the defaults' 224 px steps, as a real run does
@pytest.mark.skipif(torch.cuda.is_available(), reason="the gate is for machines without a GPU")
def test_a_run_of_hours_on_a_cpu_stops_before_dvc_with_the_ways_on(clone, image_tar):
    before = snapshot(clone)
    result = run_sh(
        clone,
        *("50000", "--data", str(image_tar), "-S", "train.lr=0.002"),
        *("-S", "models.resnet.lr_scale=2"),  # a model of the defaults', not of the presets'
    )
    assert result.returncode == 2, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert re.match(
        r"error: about [\d.]+ (h|days)( \(.*\))? of training on this CPU \(no GPU found\)",
        errors[0],
    )
    for way in ("--preset cpu", "--preset transfer", "--preset smoke", "a GPU", "--allow-slow"):
        assert way in errors[0]
    # the ways on keep the user's own data and the overrides that apply to them (the cpu and
    # transfer presets replace the models: with models.resnet's, their commands would fail)
    assert (
        f"`bash run.sh --preset cpu --data {image_tar} -S train.lr=0.002` (90% in ~30 min on 2 "
        "cores; without -S models.resnet.lr_scale=2: not a param of that run)"
    ) in errors[0]
    assert (
        f"`bash run.sh --preset transfer --data {image_tar} -S train.lr=0.002` "
        "(without -S models.resnet.lr_scale=2: not a param of that run)"
    ) in errors[0]
    assert "for 50000 epochs" in result.stdout  # the estimate itself was printed
    assert snapshot(clone) == before

    allowed = run_sh(clone, "50000", "--allow-slow", "--dry-run")
    assert allowed.returncode == 0, allowed.stderr
    assert "error:" not in allowed.stderr and "dry run: nothing was run" in allowed.stdout

    dry = run_sh(clone, "50000", "--dry-run")  # a dry run that succeeds says what a run would do
    assert dry.returncode == 0, dry.stderr
    assert "error:" not in dry.stderr + dry.stdout
    assert "note: a real run would stop here: about " in dry.stdout
    assert snapshot(clone) == before


@pytest.mark.slow  # a busy machine, for real
@pytest.mark.skipif(torch.cuda.is_available(), reason="the gate is for machines without a GPU")
@pytest.mark.parametrize("preset", ["smoke", "cpu"])
def test_the_presets_made_for_a_cpu_start_however_busy_the_machine(clone, tmp_path, preset):
    """A busy process on every core made a 1.25 min smoke run look like 82 min and stopped it;
    a preset made for a CPU (its runs_on) is never stopped there, however long it looks."""
    data = synthetic.write_image_folder(tmp_path / "data", 110, 10)  # the cpu preset's 2% split
    smaller = ["-S", "train.batch_size=100"] if preset == "cpu" else []  # timing 1,000 costs 2 min
    with busy(os.cpu_count() or 1):
        result = run_sh(
            clone, "50000", "--preset", preset, "--data", str(data), *smaller, "--dry-run"
        )
    assert result.returncode == 0, result.stderr
    assert "error:" not in result.stderr + result.stdout
    assert f"note: the {preset} preset is made for a CPU: it runs however long" in result.stdout
    assert "would stop here" not in result.stdout


def test_a_second_run_in_the_same_clone_is_refused_up_front(clone):
    """Two `dvc exp run` in one workspace: DVC refused the second and then broke the first.
    Sweeps may share a clone (their trials run in DVC's temporary copies); a workspace run
    shares it with nothing."""
    lock = clone / ".dvc/tmp/run.sh.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    refusal = [
        "error: another run.sh is running in this clone (pid 4242 since 10:00:00: bash run.sh "
        "5 resnet); wait for it to end, or stop it"
    ]
    run, sweep = ["2", "--dry-run"], ["1", "resnet", "sweep", "--dry-run"]
    for holding, allowed in (("-x", []), ("-s", [sweep])):
        lock.write_text("pid 4242 since 10:00:00: bash run.sh 5 resnet\n")
        holder = subprocess.Popen(
            ["flock", holding, str(lock), "sleep", "120"], start_new_session=True
        )
        try:
            time.sleep(0.5)
            for args in (run, sweep):
                result = run_sh(clone, *args)
                if args in allowed:
                    assert result.returncode == 0, result.stderr
                else:
                    assert result.returncode == 2
                    assert result.stderr.strip().splitlines() == refusal
        finally:
            os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep, which holds the lock
            holder.wait()


def test_data_is_a_path_from_where_run_sh_was_started(clone, image_tar, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "copies").mkdir(parents=True)
    shutil.copy(image_tar, elsewhere / "copies" / "cifar.tar.gz")
    result = subprocess.run(
        ["bash", str(clone / "run.sh"), "2", "--dry-run", "--data", "copies/cifar.tar.gz"],
        cwd=elsewhere,
        env={**os.environ, "CIFAR10_VENV": str(Path(sys.executable).parent.parent)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "dry run: nothing was run or changed" in result.stdout


@pytest.mark.parametrize("command", ["show", "serve", "predict"])
def test_the_environment_s_commands_run_without_activating_it(clone, command):
    """`python -m stages.serve` in a new shell failed at `import anyio`: the README's commands
    go through run.sh, which sets up and uses .venv itself."""
    result = run_sh(clone, command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


def test_a_read_only_clone_is_one_line(clone, tmp_path):
    """A clone the user cannot write (root's, or one mounted read-only): bash's raw
    'Read-only file system', even for --dry-run."""
    copy = Path(shutil.copytree(clone, tmp_path / "ro", symlinks=True))
    shutil.rmtree(copy / ".dvc/tmp", ignore_errors=True)
    tmp_path.chmod(0o755)
    if os.geteuid() == 0:  # root writes through permissions: run as nobody, in root's files
        result = subprocess.run(
            ["runuser", "-u", "nobody", "--", "bash", "run.sh", "--dry-run"],
            cwd=copy,
            env={**os.environ, "CIFAR10_VENV": str(Path(sys.executable).parent.parent)},
            capture_output=True,
            text=True,
            timeout=600,
        )
    else:
        directories = [path for path in [copy, *copy.rglob("*")] if path.is_dir()]
        for path in directories:
            path.chmod(0o555)
        try:
            result = run_sh(copy, "--dry-run")
        finally:
            for path in directories:
                path.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: this clone is not writable ({copy}/.dvc/tmp): run.sh keeps its lock and DVC "
        "its state there; run it from a writable clone"
    ]
