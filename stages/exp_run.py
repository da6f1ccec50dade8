"""exp_run: `dvc exp run` (or `dvc repro`) as run.sh runs them: a failed run loses no output,
and no DVC warning per never-produced output.

    python -m stages.exp_run [dvc exp run's arguments]
    python -m stages.exp_run --repro [dvc repro's arguments]

DVC deletes a stage's outputs before running it. When the stage then fails, the outputs DVC
caches come back with `dvc checkout`, but those it keeps in git (`cache: false`: metrics,
reports) were gone unless committed, and nobody ran the checkout. Here every cache-less output
is copied aside before DVC starts and put back where a failed run left it missing, and the
cached ones are checked out again: the workspace is as it was before the run.

Before it runs anything, `dvc exp run` restores the recorded outputs of the stages it will
run. On a clone whose dvc.lock does not record them yet (main carries no run) there is nothing
to restore, and DVC warns "No file hash info found for '<path>'. It won't be created." once per
output: 13 lines for the three-model graph, about files the run is about to create. They are
replaced by one note; every other line of DVC's is left as it is.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

NOTHING_TO_RESTORE = "No file hash info found for"
CHECKOUT_LOGGERS = ("dvc_data.index.checkout", "dvc_data.hashfile.checkout")


class NothingToRestore(logging.Filter):
    """Drops DVC's 'No file hash info found' warnings; says once why."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(NOTHING_TO_RESTORE):
            return True
        if not self.hidden:
            print(
                "note: outputs never produced in this clone have no recorded version to "
                "restore; this run creates them",
                file=sys.stderr,
            )
        self.hidden += 1
        return False


def uncached_outputs() -> list[Path]:
    """The outputs DVC leaves to git (``cache: false``) that exist now, relative paths."""
    from dvc.repo import Repo

    root = Path.cwd()
    with Repo() as repo:
        paths = [
            Path(out.fs_path).relative_to(root)
            for stage in repo.index.stages
            for out in stage.outs
            if not out.use_cache
        ]
    return [path for path in paths if path.exists()]


def put_back(saved: Path, outputs: list[Path]) -> list[Path]:
    """The outputs the failed run left missing, copied back from ``saved``."""
    restored = []
    for output in outputs:
        if not output.exists():
            output.parent.mkdir(parents=True, exist_ok=True)
            copy = shutil.copytree if (saved / output).is_dir() else shutil.copy2
            copy(saved / output, output)
            restored.append(output)
    return restored


def main(arguments: list[str]) -> int:
    from dvc.cli import main as dvc_main

    command = (
        ["repro", *arguments[1:]] if arguments[:1] == ["--repro"] else ["exp", "run", *arguments]
    )
    hidden = NothingToRestore()
    for name in CHECKOUT_LOGGERS:
        logging.getLogger(name).addFilter(hidden)
    outputs = uncached_outputs()
    with tempfile.TemporaryDirectory() as saved:
        for output in outputs:
            (Path(saved) / output).parent.mkdir(parents=True, exist_ok=True)
            copy = shutil.copytree if output.is_dir() else shutil.copy2
            copy(output, Path(saved) / output)
        status = dvc_main(command)
        if status == 0:
            return 0
        restored = put_back(Path(saved), outputs)
    dvc_main(["checkout", "--allow-missing", "--quiet"])  # the cached ones, as dvc.lock records
    if restored:
        print(
            f"note: the run failed; put back {len(restored)} output(s) DVC had deleted: "
            + ", ".join(map(str, restored[:6]))
            + (" ..." if len(restored) > 6 else ""),
            file=sys.stderr,
        )
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
