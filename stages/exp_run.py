"""exp_run: `dvc exp run` as run.sh runs it, without one DVC warning per never-produced output.

    python -m stages.exp_run [dvc exp run's arguments]

Before it runs anything, `dvc exp run` restores the recorded outputs of the stages it will
run. On a clone whose dvc.lock does not record them yet (main carries no run) there is nothing
to restore, and DVC warns "No file hash info found for '<path>'. It won't be created." once per
output: 13 lines for the three-model graph, about files the run is about to create. They are
replaced by one note; every other line of DVC's is left as it is.
"""

from __future__ import annotations

import logging
import sys

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


def main(arguments: list[str]) -> int:
    from dvc.cli import main as dvc_main

    hidden = NothingToRestore()
    for name in CHECKOUT_LOGGERS:
        logging.getLogger(name).addFilter(hidden)
    return dvc_main(["exp", "run", *arguments])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
