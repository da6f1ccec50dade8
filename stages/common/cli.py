"""The one way every stage script starts: check params, run, turn known errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from stages.common.errors import StageError
from stages.common.params import Params, load_params
from stages.common.runtime import keep_freed_memory

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def run_command(main: Callable[[], None]) -> None:
    """Call ``main()``; a StageError exits with one clear line and its exit code."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    keep_freed_memory()
    try:
        main()
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


def run_stage(main: Callable[[Params], None], load: Callable[[], Params] = load_params) -> None:
    """Load params.yaml, call ``main(params)``; a StageError exits with one clear line."""
    run_command(lambda: main(load()))
