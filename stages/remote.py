"""remote: check that a DVC remote answers before anything is pushed to it or pulled from it.

    python -m stages.remote [NAME]        # the default remote when no name is given

DVC reports a refused key as "unexpected error - Forbidden", a missing bucket as "unexpected
error - The specified bucket does not exist", both under a support footer, and only once a
push or pull is under way. This asks the remote for its top folder first and says in one line
what is wrong and what to change (exit 1), or that it answers (exit 0). The merge-request job
runs it before `dvc pull`.
"""

from __future__ import annotations

import argparse
import logging

from stages.common.plumbing.command import run_command
from stages.common.plumbing.errors import StageError, first_line

log = logging.getLogger("remote")


class RemoteError(StageError):
    """The remote cannot be used as configured."""


def check_remote(name: str | None = None) -> str:
    """A line describing the remote ``name`` (or the default) once it has answered; raises
    RemoteError naming the remote and the likely fix when it does not."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    with Repo() as repo:
        try:
            remote = repo.cloud.get_remote(name)
        except DvcException as error:
            raise RemoteError(f"remote: {first_line(error)}") from None
        config = repo.config["remote"][remote.name]
        url, fs = config["url"], remote.fs
        where = f"remote '{remote.name}' ({url}{_endpoint(config)})"
        try:
            if fs.exists(remote.path):
                return f"{where} answers"
            top = remote.path.split("/", 1)[0]
            if fs.protocol != "local" and top != remote.path and not fs.exists(top):
                raise RemoteError(f"{where}: the bucket '{top}' does not exist; create it first")
            return f"{where} answers (empty: the first push fills it)"
        except PermissionError as error:
            raise RemoteError(
                f"{where}: the credentials were refused ({first_line(error)}); check "
                "access_key_id and secret_access_key (`dvc remote modify --local ...`) or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            ) from None
        except RemoteError:
            raise
        except Exception as error:  # the storage clients raise many types for "no answer"
            raise RemoteError(f"{where}: no answer ({first_line(error)})") from None


def _endpoint(config: dict) -> str:
    endpoint = config.get("endpointurl")
    return f" at {endpoint}" if endpoint else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help="a DVC remote (default: the default remote)")
    args = parser.parse_args()
    log.info(check_remote(args.name))


if __name__ == "__main__":
    run_command(main)
