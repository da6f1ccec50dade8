"""Real services on 127.0.0.1 for the scale-out tests and benchmark, started here and stopped
after: a PostgreSQL server from Debian's packages (a shared Optuna study) and moto's S3 API
server (a DVC remote), each with its credentials enforced.

PostgreSQL runs as the unprivileged `postgres` user that Debian's package creates, from a data
folder of its own in a temporary directory, listening on a free loopback port (and no Unix
socket anyone else shares); moto runs as a subprocess with request signing checked (IAM
enforcement after the three calls that create its one user).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGRES_USER = "postgres"  # the system user Debian's package makes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(base_url: str, why_down: Callable[[], str | None], seconds: float = 120):
    """Until ``GET {base_url}/healthz`` answers 200 (the prediction service starting). A
    RuntimeError as soon as ``why_down()`` names a reason (its process ended), or after
    ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        reason = why_down()
        if reason is not None or time.monotonic() > deadline:
            raise RuntimeError(reason or f"{base_url} did not answer in {seconds:.0f} s")
        time.sleep(0.5)


def postgres_missing() -> str | None:
    """Why no PostgreSQL server can start here, or None."""
    if not (POSTGRES_BIN / "initdb").exists():
        return "PostgreSQL is not installed (.ci/run installs Debian's postgresql)"
    if os.geteuid() != 0:
        return "starting PostgreSQL as its own user needs root"
    return None


@dataclass
class Postgres:
    """A PostgreSQL server of the tests' own: user `sweeper` (password auth), database
    `optuna`."""

    folder: Path
    port: int
    password: str = "sweeper-secret"
    process: subprocess.Popen | None = None

    def url(self, password: str | None = None, port: int | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql+psycopg://sweeper:{secret}@127.0.0.1:{port or self.port}/optuna"

    def _as_postgres(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runuser", "-u", POSTGRES_USER, "--", *command],
            check=True,
            capture_output=True,
            text=True,
            **kwargs,
        )

    def start(self) -> Postgres:
        data = self.folder / "data"
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.folder, POSTGRES_USER)
        password_file = self.folder / "password"
        password_file.write_text(self.password + "\n")
        shutil.chown(password_file, POSTGRES_USER)
        self._as_postgres(
            str(POSTGRES_BIN / "initdb"),
            *("-D", str(data), "-U", "sweeper", "--auth=scram-sha-256"),
            f"--pwfile={password_file}",
        )
        self.process = subprocess.Popen(
            [
                *("runuser", "-u", POSTGRES_USER, "--", str(POSTGRES_BIN / "postgres")),
                *("-D", str(data), "-h", "127.0.0.1", "-p", str(self.port)),
                *("-k", str(self.folder)),  # its socket in its own folder, not /run
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ready = [str(POSTGRES_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)]
        deadline = time.monotonic() + 60
        while subprocess.run(ready, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)
        env = {"PGPASSWORD": self.password}
        psql = [str(POSTGRES_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port)]
        subprocess.run(
            [*psql, "-U", "sweeper", "-d", "postgres", "-c", "CREATE DATABASE optuna"],
            check=True,
            capture_output=True,
            env={**os.environ, **env},
        )
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)


@dataclass
class S3:
    """moto's S3 API server with one IAM user whose key signs every request."""

    port: int
    bucket: str = "cifar10-team"
    access_key: str = ""
    secret_key: str = ""
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3:
        import boto3

        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto's server did not start"
                time.sleep(0.2)
        bootstrap = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1", **bootstrap)
        iam.create_user(UserName="team")
        key = iam.create_access_key(UserName="team")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="team", PolicyName="all", PolicyDocument=json.dumps(policy))
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def objects(self) -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)


def temporary_folder() -> Path:
    """A folder other users may enter (PostgreSQL's data lives below it, as `postgres`)."""
    folder = Path(tempfile.mkdtemp(prefix="cifar10-services-"))
    folder.chmod(0o755)
    return folder
