"""The one way every stage script starts: check params, run, turn known errors into one line."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from stages.common.plumbing.allocator import keep_freed_memory
from stages.common.plumbing.durations import duration
from stages.common.plumbing.errors import StageError, Terminated
from stages.common.plumbing.stage_params import Loaded, load_stage_params

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def run_command(main: Callable[[], None]) -> None:
    """Call ``main()``; a StageError exits with one clear line and its exit code, so does an
    interrupt (Ctrl-C: 130, SIGTERM: 143, as shells count them) and an error of the operating
    system (a full disk, a read-only folder)."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    keep_freed_memory()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt as interrupt:  # Terminated too
        terminated = isinstance(interrupt, Terminated) or isinstance(
            interrupt.__cause__, Terminated
        )
        said = str(interrupt) or "interrupted"
        print(f"error: {said}{' (SIGTERM)' if terminated else ''}", file=sys.stderr)
        sys.exit(143 if terminated else 130)
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        print(f"error: {error.strerror or error}{where}", file=sys.stderr)
        sys.exit(1)


def run_stage(main: Callable[[Loaded], None], sections: type[Loaded]) -> None:
    """Check the ``sections`` of params.yaml the stage reads, call ``main(params)`` and say how
    long the stage took from the process's start (what a run costs, stage by stage, Python's
    start-up and imports included); a StageError exits with one clear line."""
    process_started = psutil.Process().create_time()
    started = time.time()

    def timed() -> None:
        main(load_stage_params(sections))
        name = Path(sys.argv[0]).name.removesuffix(".py").removeprefix("stages.")
        stage = " ".join([name, *sys.argv[1:]])
        now = time.time()
        logging.getLogger("stage").info(
            "%s took %s (%s of it starting Python and importing)",
            stage,
            duration(now - process_started),
            duration(started - process_started),
        )

    run_command(timed)
