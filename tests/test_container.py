"""The container. Without a runtime: the entrypoint hands `podman run IMAGE 10 resnet`'s
arguments to run.sh in the mounted clone, runs a named program instead, gives any uid a home
and git an identity. With podman (CI installs it): the image built from the Containerfile as it
is (on a stand-in base, tests/container.py), run as a user would run it, rootful and rootless,
training in a mounted clone."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests import container, services
from tests.conftest import REAL_DATA, ROOT, needs

RECORDING_RUN_SH = 'printf "%s\\n" "$PWD" "$@" > "$RECORD"\n'


def entrypoint(
    workdir: Path, *args: str, tmp_path: Path, home: Path | None = None, path: str | None = None
) -> subprocess.CompletedProcess:
    (tmp_path / "home").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PATH": path or os.environ["PATH"],
        "CIFAR10_WORKDIR": str(workdir),
        "RECORD": str(tmp_path / "record.txt"),
        "HOME": str(home or tmp_path / "home"),  # the entrypoint's git config goes here
        "TMPDIR": str(tmp_path),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts/entrypoint.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_arguments_reach_run_sh_in_the_mounted_clone(tmp_path):
    clone = tmp_path / "work"
    clone.mkdir()
    (clone / "run.sh").write_text(RECORDING_RUN_SH)
    result = entrypoint(clone, "10", "resnet", "--preset", "cpu", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "record.txt").read_text().split() == [
        str(clone),
        "10",
        "resnet",
        "--preset",
        "cpu",
    ]
    gitconfig = (tmp_path / "home/.gitconfig").read_text()
    assert f"directory = {clone}" in gitconfig


def test_a_program_name_runs_that_program(tmp_path):
    clone = tmp_path / "work"
    clone.mkdir()
    (clone / "run.sh").write_text(RECORDING_RUN_SH)
    result = entrypoint(clone, "python", "-c", "print('ran')", tmp_path=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ran"
    assert not (tmp_path / "record.txt").exists()


def test_serve_starts_the_service_on_every_interface(tmp_path):
    clone = tmp_path / "work"
    clone.mkdir()
    (clone / "run.sh").write_text(RECORDING_RUN_SH)
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "python").write_text(f"#!/bin/sh\n{RECORDING_RUN_SH}")
    (tools / "python").chmod(0o755)
    path = f"{tools}:{os.environ['PATH']}"
    result = entrypoint(
        clone, "serve", "--model", "export/model.onnx", tmp_path=tmp_path, path=path
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "record.txt").read_text().split()[1:] == [
        *("-m", "stages.serve", "--host", "0.0.0.0", "--model", "export/model.onnx")
    ]


def test_without_a_mounted_clone_the_image_copy_runs(tmp_path):
    result = entrypoint(tmp_path / "absent", "--help", tmp_path=tmp_path)
    assert result.returncode == 0
    assert "no clone mounted" in result.stderr
    assert "bash run.sh [EPOCHS] [MODEL|all] [train|sweep]" in result.stdout


@pytest.mark.parametrize("home", ["/", "WORKDIR", "/nonexistent/home"])
def test_any_uid_gets_a_home_of_its_own_and_git_an_identity(tmp_path, home):
    """`--user 1001` or keep-id: a uid the image does not know. Its HOME from the runtime is /
    or the clone; git's settings go to a folder of its own instead, and an experiment can
    commit (DVC stops with "Git user name and email must be configured" otherwise)."""
    clone = tmp_path / "work"
    clone.mkdir()
    (clone / "run.sh").write_text(RECORDING_RUN_SH)
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
    given = clone if home == "WORKDIR" else Path(home)
    result = entrypoint(
        clone, "bash", "-c", 'echo "$HOME"; git config user.name', tmp_path=tmp_path, home=given
    )
    assert result.returncode == 0, result.stderr
    used, name = result.stdout.split("\n")[:2]
    assert used == f"{tmp_path}/home-{os.getuid()}" and name == "cifar10-dvc container"
    assert not (clone / ".gitconfig").exists()


def test_an_identity_the_clone_has_is_kept(tmp_path):
    clone = tmp_path / "work"
    clone.mkdir()
    (clone / "run.sh").write_text(RECORDING_RUN_SH)
    subprocess.run(["git", "init", "-q"], cwd=clone, check=True)
    subprocess.run(["git", "config", "user.email", "me@example.org"], cwd=clone, check=True)
    result = entrypoint(clone, "git", "config", "user.email", tmp_path=tmp_path)
    assert result.stdout.strip() == "me@example.org"
    assert "user" not in (tmp_path / "home/.gitconfig").read_text()


def test_containerfile_runs_run_sh_as_a_non_root_user():
    text = (ROOT / "Containerfile").read_text()
    entry = re.search(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    assert entry and json.loads(entry.group(1)) == ["/opt/cifar10-dvc/scripts/entrypoint.sh"]
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^FROM \S*python:3\.1[1-9]", text, re.MULTILINE)
    assert re.search(r"^ARG CML_VERSION=0\.20$", text, re.MULTILINE)  # empty: no Node.js, CML
    assert 'if [ -n "$CML_VERSION" ]' in text and '"@dvcorg/cml@$CML_VERSION"' in text
    assert "RUN PIP_NO_CACHE_DIR=1 bash scripts/setup.sh" in text  # the stamp run.sh checks


# --- the image itself, built and run with podman -------------------------------------------

NOT_HERE = container.available()
needs_podman = needs(
    NOT_HERE and f"no container runtime: {NOT_HERE}", required_by="CIFAR10_REQUIRE_CONTAINER"
)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="makes users and chowns files")
HOST_UID = 1234  # a host user that is neither root nor the image's 1000
ROOTLESS_USER, ROOTLESS_UID = "cifar10-rootless", 2345


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory) -> dict[str, str]:
    assert NOT_HERE is None, NOT_HERE
    return container.environment(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def image(podman_env, tmp_path_factory) -> str:
    """The image of this checkout's Containerfile, built without CML (npm here has none)."""
    base = container.ensure_base_image(podman_env, tmp_path_factory.mktemp("base"))
    seconds, result = container.build(podman_env, ROOT, "--build-arg", "CML_VERSION=")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    size = int(container.image_size(podman_env)) / 1e9
    print(f"{base}; {container.IMAGE} built in {seconds:.0f} s, {size:.1f} GB")
    return container.IMAGE


def run(podman_env, *args: str, timeout: int = 900, **kwargs) -> subprocess.CompletedProcess:
    result = container.podman(podman_env, "run", "--rm", *args, timeout=timeout, **kwargs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow  # builds and runs the image
@needs_podman
def test_the_image_runs_run_sh_as_uid_1000_programs_by_name_and_installs_nothing(podman_env, image):
    assert (
        "bash run.sh [EPOCHS] [MODEL|all] [train|sweep]" in run(podman_env, image, "--help").stdout
    )
    assert run(podman_env, image, "id", "-u").stdout.strip() == "1000"
    assert "DVC version: 3." in run(podman_env, image, "dvc", "version").stdout
    # setup.sh's stamp was written by the build: no pip, no network needed at run time
    setup = run(podman_env, "--network", "none", image, "bash", "scripts/setup.sh")
    assert setup.stdout == "" and "pip" not in setup.stderr


@pytest.mark.slow  # builds and runs the image
@needs_podman
def test_containerignore_leaves_tools_results_and_weights_out_at_any_depth(podman_env, tmp_path):
    context = tmp_path / "context"
    kept = ["stages/train.py", "tests/synthetic.py", "README.md"]
    left_out = [
        ".venv/bin/python",
        ".lint-venv/bin/ruff",
        ".ci/tools/node_modules/re2/re2.node",
        ".ci/tools.log",
        "benchmarks/results/throughput.json",
        "benchmarks/weights/resnet.pt",
        "tests/data/model.safetensors",
        "stages/common/__pycache__/io.cpython-311.pyc",
        "models/resnet/model.safetensors",
        "evaluation/resnet/predictions.npz",
        "export/model.onnx",
        "benchmarks/nets/other.onnx",
        "sweeps/s/s-t001.log",
        ".dvc/cache/files/md5/00/1",
    ]
    for name in kept + left_out:
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_text("x")
    shutil.copy(ROOT / ".containerignore", context / ".containerignore")
    (context / "Containerfile").write_text(f"FROM {container.BASE_IMAGE}\nCOPY . /context\n")
    container.ensure_base_image(podman_env, tmp_path)
    built = container.podman(
        podman_env, "build", "-q", "-t", "localhost/ignore-probe", str(context)
    )
    assert built.returncode == 0, built.stderr
    listed = run(podman_env, "localhost/ignore-probe", "find", "/context", "-type", "f").stdout
    found = {line.removeprefix("/context/") for line in listed.split()}
    assert set(kept) <= found and not set(left_out) & found, found
    container.podman(podman_env, "rmi", "localhost/ignore-probe")


def clone_for(owner: int, folder: Path) -> Path:
    """A git clone of this checkout in ``folder``, with an uncommitted edit of a tracked file
    (so that an experiment has to commit a stash), owned by ``owner``."""
    clone = folder / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    with (clone / "README.md").open("a") as readme:
        readme.write("\nan uncommitted edit\n")
    subprocess.run(["chown", "-R", f"{owner}:{owner}", str(folder)], check=True)
    return clone


def owners(folder: Path) -> set[int]:
    return {path.stat().st_uid for path in folder.rglob("*") if ".git" not in path.parts}


@pytest.mark.slow  # builds and runs the image
@needs_podman
@as_root
def test_a_training_run_in_a_mounted_clone_of_another_user(podman_env, image, tmp_path, image_tar):
    """Rootful podman (or Docker) with the clone's owner as the container's user: the
    documented `--user "$(id -u):$(id -g)"`. The real data mounted read-only when ../shared has
    it, the generated data otherwise."""
    source = REAL_DATA if REAL_DATA.exists() else image_tar
    data = tmp_path / "data" / source.name  # readable by the container's user
    data.parent.mkdir()
    shutil.copy(source, data)
    clone = clone_for(HOST_UID, tmp_path)
    started = time.perf_counter()
    result = run(
        podman_env,
        *("--user", f"{HOST_UID}:{HOST_UID}", "-v", f"{clone}:/work"),
        *("-v", f"{data.parent}:/data:ro", image),
        *("1", "--preset", "smoke", "--data", f"/data/{data.name}", "-S", "data.subset=20"),
        timeout=1800,
    )
    print(f"smoke run in the container: {time.perf_counter() - started:.0f} s")
    assert "Ran experiment(s): smoke-" in result.stdout, result.stdout[-2000:]
    assert owners(clone) == {HOST_UID}  # nothing the host user cannot change or delete
    # on the host (as root here: git and DVC are told the clone of another user is safe)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")
    host = {**os.environ, "HOME": str(home), "DVC_NO_ANALYTICS": "1"}
    shown = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "show", "--csv"],
        cwd=clone,
        capture_output=True,
        text=True,
        env=host,
    )
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^smoke-\d{8}-\d{6},", shown.stdout, re.MULTILINE), shown.stdout
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, env=host
    ).stdout.splitlines()
    # the edit stays; the experiment's params and results are applied to the workspace
    assert " M README.md" in status and " M params.yaml" in status and "?? dvc.lock" in status
    served_from_the_image(podman_env, image, clone)


def served_from_the_image(podman_env, image: str, clone: Path) -> None:
    """`podman run -p 8000:8000 IMAGE serve` on the clone's released model (and its ONNX
    export): the health check, the model card and a prediction over HTTP."""
    for model in ("release/model.safetensors", "export/model.onnx"):
        port = services.free_port()
        name = f"cifar10-serve-{port}"
        started = container.podman(
            podman_env,
            *("run", "-d", "--rm", "--name", name, "--user", f"{HOST_UID}:{HOST_UID}"),
            *("-v", f"{clone}:/work", "-p", f"127.0.0.1:{port}:8000", image),
            *("serve", "--model", model),
        )
        assert started.returncode == 0, started.stderr
        try:
            base = f"http://127.0.0.1:{port}"
            try:
                services.wait_until_healthy(base, lambda: None)
            except RuntimeError as error:
                logs = container.podman(podman_env, "logs", name)
                raise AssertionError(logs.stdout + logs.stderr) from error
            card = httpx.get(f"{base}/v1/model").json()
            assert card["file"] == model and len(card["classes"]) == 10
            buffer = io.BytesIO()
            Image.new("RGB", (48, 40), "red").save(buffer, "PNG")
            upload = [("files", ("red.png", buffer.getvalue(), "image/png"))]
            answer = httpx.post(f"{base}/v1/predict", files=upload, timeout=60)
            assert answer.status_code == 200, answer.text
            top = answer.json()["predictions"][0]["top"]
            assert len(top) == 3 and top[0]["class"] in card["classes"]
        finally:
            container.podman(podman_env, "stop", "-t", "5", name)


@pytest.fixture
def rootless_user(podman_env, image) -> Iterator[tuple[list[str], Path]]:
    """A host user who is neither root nor uid 1000, with the image in their own rootless
    storage: the command prefix that runs a program as them, and a folder of theirs."""
    if subprocess.run(["id", ROOTLESS_USER], capture_output=True).returncode:
        useradd = ["useradd", "--create-home", "--uid", str(ROOTLESS_UID), ROOTLESS_USER]
        subprocess.run(useradd, check=True)
    home = Path(f"/home/{ROOTLESS_USER}")
    runtime_dir = Path(f"/run/user/{ROOTLESS_UID}")
    runtime_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(runtime_dir, ROOTLESS_USER, ROOTLESS_USER)
    conf = home / "containers.conf"
    shutil.copy(podman_env["CONTAINERS_CONF"], conf)
    env = {
        "HOME": str(home),
        "PATH": os.environ["PATH"],
        "XDG_RUNTIME_DIR": str(runtime_dir),
        "CONTAINERS_CONF": str(conf),
    }
    as_user = ["runuser", "-u", ROOTLESS_USER, "--", "env", *(f"{k}={v}" for k, v in env.items())]
    if subprocess.run([*as_user, "podman", "image", "exists", image]).returncode:
        saved = subprocess.Popen(["podman", "save", image], stdout=subprocess.PIPE, env=podman_env)
        loaded = subprocess.run(
            [*as_user, "podman", "load", "-q"],
            stdin=saved.stdout,
            capture_output=True,
            timeout=1800,
        )
        saved.wait()
        assert loaded.returncode == 0, loaded.stderr
    folder = home / f"test-{os.getpid()}"
    folder.mkdir()
    yield as_user, folder
    shutil.rmtree(folder)


@pytest.mark.slow  # builds and runs the image
@needs_podman
@as_root
def test_rootless_podman_writes_the_clone_with_keep_id(rootless_user, image):
    """Rootless podman maps the host user to root in the container unless told otherwise;
    --userns=keep-id:uid=1000,gid=1000 maps them to the image's user, whatever their uid."""
    as_user, folder = rootless_user
    clone = clone_for(ROOTLESS_UID, folder)
    script = "id -u; touch /work/written-in-the-container; git -C /work status --short README.md"
    # --network none: on this machine /dev/net/tun is root's alone, so rootless networking
    # (slirp4netns) cannot start; this run needs no network
    flags = ["--rm", "--network", "none", "--userns=keep-id:uid=1000,gid=1000"]
    flags += ["-v", f"{clone}:/work"]
    result = subprocess.run(
        [*as_user, "podman", "run", *flags, image, "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["1000", " M README.md"]
    assert (clone / "written-in-the-container").stat().st_uid == ROOTLESS_UID
