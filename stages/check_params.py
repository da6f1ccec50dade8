"""check_params: validate params.yaml before DVC runs anything (run.sh calls it first).

DVC removes a stage's outputs before running it, so a typo found inside a stage has already
cost the workspace copy of those outputs (`dvc checkout` brings them back). Checking here,
before `dvc repro`, loses nothing.
"""

from __future__ import annotations

import logging

from stages.common.cli import run_stage
from stages.common.models import check_model_spec
from stages.common.params import Params

log = logging.getLogger("check_params")


def main(params: Params) -> None:
    for name, spec in params.models.items():
        check_model_spec(name, spec)
    log.info("params.yaml is valid (%d models: %s)", len(params.models), ", ".join(params.models))


if __name__ == "__main__":
    run_stage(main)
