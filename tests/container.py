"""Podman for the container tests: this machine's settings, the stand-in base image, the build.

The Containerfile starts FROM docker.io/library/python:3.11-slim, which no registry here
serves. The tests build a stand-in under that name from Debian's own packages (mmdebstrap:
Debian 12's Python 3.11, venv, pip, git's dependencies come in the build) and say so; the
Containerfile is built unchanged. What this kind of machine needs and a user's does not lives
here, never in the Containerfile:
- podman's default open-files limit (1048576) is over this machine's hard limit (20000), and
  its cgroups v1 hierarchy wants runc rather than crun: a containers.conf of the tests' own;
- the package proxy re-signs HTTPS, and the Debian snapshot's Release files are past their
  Valid-Until date: the stand-in carries the host's CA bundle (pip is told to use it) and
  apt's Check-Valid-Until off;
- /dev/net/tun is root's alone, so a rootless container gets no network (--network none in
  the rootless test, which needs none).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

BASE_IMAGE = "docker.io/library/python:3.11-slim"
IMAGE = "localhost/cifar10-dvc:test"
DEBIAN = "http://deb.debian.org/debian"
SOURCES = [
    f"deb {DEBIAN} bookworm main",
    f"deb {DEBIAN} bookworm-updates main",
    f"deb {DEBIAN}-security bookworm-security main",
]
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
"""


def available() -> str | None:
    """Why the container tests cannot run here, or None when they can."""
    for tool in ("podman", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs it from Debian's packages)"
    return None


def environment(config_dir: Path) -> dict[str, str]:
    """The environment podman runs with in the tests: this machine's containers.conf."""
    conf = config_dir / "containers.conf"
    if not conf.exists():
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(
    env: dict[str, str], *args: str, timeout: int = 600, **kwargs
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def ensure_base_image(env: dict[str, str], scratch: Path) -> str:
    """The stand-in for python:3.11-slim, made unless podman has one; what was done."""
    if podman(env, "image", "exists", BASE_IMAGE).returncode == 0:
        return f"{BASE_IMAGE}: the stand-in made from Debian packages earlier"
    started = time.perf_counter()
    tarball = scratch / "base.tar"
    customize = [
        f"copy-in {HOST_CA_BUNDLE} /etc/ssl/certs/",
        'printf "[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n" > "$1/etc/pip.conf"',
    ]
    subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            "--include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates",
            '--aptopt=Acquire::Check-Valid-Until "false"',
            *(f"--customize-hook={hook}" for hook in customize),
            "bookworm",
            str(tarball),
            *SOURCES,
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    imported = podman(env, "import", "--quiet", str(tarball), BASE_IMAGE)
    assert imported.returncode == 0, imported.stderr
    tarball.unlink()
    return (
        f"{BASE_IMAGE}: a stand-in made from Debian 12's packages with mmdebstrap and imported "
        f"under that name ({time.perf_counter() - started:.0f} s; no registry is reachable here)"
    )


def build(
    env: dict[str, str], context: Path, *args: str
) -> tuple[float, subprocess.CompletedProcess]:
    """Seconds and result of `podman build` of ``context`` as IMAGE."""
    started = time.perf_counter()
    result = podman(
        env, "build", *args, "-t", IMAGE, "-f", "Containerfile", str(context), timeout=3600
    )
    return time.perf_counter() - started, result


def image_size(env: dict[str, str]) -> str:
    return podman(env, "image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip()
