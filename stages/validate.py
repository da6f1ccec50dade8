"""validate: check the prepared data; hard failures stop the graph before training."""

from __future__ import annotations

import logging
from pathlib import Path

from stages.common.cli import run_stage
from stages.common.dataset import MANIFEST_FILE, load_prepared
from stages.common.errors import DataError
from stages.common.io import read_json, write_json
from stages.common.params import Params
from stages.common.validation import validate

log = logging.getLogger("validate")
REPORT_FILE = Path("metrics/validate.json")


def main(params: Params) -> None:
    data = load_prepared()
    report = validate(data, read_json(MANIFEST_FILE), params.validate_)
    for warning in report.warnings:
        log.warning(warning)
    write_json(
        REPORT_FILE,
        {
            "passed": not report.hard,
            "hard_failures": len(report.hard),
            "warnings": len(report.warnings),
            **report.numbers,
            "hard_failure_messages": report.hard,
            "warning_messages": report.warnings,
        },
    )
    if report.hard:
        raise DataError(
            f"validate: {len(report.hard)} hard failure(s), see {REPORT_FILE}: "
            + " | ".join(report.hard)
        )
    log.info("data passed validation with %d warning(s)", len(report.warnings))


if __name__ == "__main__":
    run_stage(main)
