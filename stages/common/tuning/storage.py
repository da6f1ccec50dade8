"""A sweep's Optuna storage: a journal file several processes on one machine share, or a
database (SQLite, PostgreSQL) workers on several machines share; opened by the sweep with
heartbeats and retries, and from inside a trial by its train stage."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

from stages.common.plumbing.errors import ParamsError, first_line

HEARTBEAT_SECONDS = 20
TRIAL_RETRIES = 3
SCHEMA_ATTEMPTS = 3  # opening a new database that another worker is setting up


def is_journal(url: str) -> bool:
    """Whether ``url`` names an Optuna journal file (journal:PATH, or a path ending .log)."""
    return url.startswith("journal:") or url.endswith(".log")


def storage_from_url(url: str):
    """An Optuna storage for ``url``: a journal file (path ending in .log, or journal:PATH),
    which several processes on one machine can share, or any RDB URL Optuna accepts."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if is_journal(url):
        path = url.removeprefix("journal:")
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    return optuna.storages.RDBStorage(url)


def absolute_sqlite(url: str) -> str:
    """A relative SQLite URL made absolute: trials run in DVC's temporary copies of the
    repository, and their training reports to the study from there."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + (Path.cwd() / url[len(prefix) :]).as_posix()
    return url


def open_storage(url: str):
    """The study's storage at ``url`` (an RDB with heartbeats, or a journal file); one line
    for a URL that is no URL, a database that cannot be opened, a driver not installed, before
    any trial runs."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    if is_journal(url):
        return storage_from_url(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ParamsError(
            f"tune.storage: '{url}' is neither a database URL (sqlite:///path, "
            "postgresql://user:password@host/database) nor a journal file (a path ending .log)"
        ) from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                return _rdb_storage(url)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # two workers meeting a new database create Optuna's tables at once, and the
                # slower one's CREATE fails: the tables are there now, so it tries again
                if attempt == SCHEMA_ATTEMPTS - 1:
                    raise
                time.sleep(1 + attempt)
    except ImportError:
        driver = parsed.get_dialect().driver
        raise ParamsError(
            f"tune.storage: {shown} needs the database driver '{driver}', which is not "
            "installed (pip install -r requirements-remote.txt)"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as error:
        cause = getattr(error, "orig", None) or error
        raise ParamsError(f"tune.storage: cannot open {shown} ({first_line(cause)})") from None


def shown_url(url: str) -> str:
    """``url`` as a log line may show it: the password hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url  # a journal file's path


def _rdb_storage(url: str):
    import optuna

    with warnings.catch_warnings():  # heartbeats are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=tune_heartbeat(),
            grace_period=3 * tune_heartbeat(),
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                TRIAL_RETRIES
            ),
        )


def tune_heartbeat() -> int:
    """Seconds between a running trial's heartbeats (a killed trial is failed after 3)."""
    return int(os.environ.get("SWEEP_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS))
