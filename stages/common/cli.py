"""The one way every stage script starts: check params, run, turn known errors into one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from stages.common.errors import StageError
from stages.common.params import Params, load_params


def run_stage(main: Callable[[Params], None]) -> None:
    """Load params.yaml, call ``main(params)``; a StageError exits with one clear line."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main(load_params())
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
