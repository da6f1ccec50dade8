"""validate: check the prepared data; hard failures stop the graph before training.

Outputs: ``metrics/validate.json`` (the verdict, a DVC metric) and ``reports/validation.json``
(every number and message).
"""

from __future__ import annotations

import logging

from pydantic import Field

from stages.common.config.data import ValidateParams
from stages.common.data.checks import validate
from stages.common.data.prepared import load_prepared
from stages.common.plumbing.command import run_stage
from stages.common.plumbing.errors import DataError
from stages.common.plumbing.files import read_json, write_json
from stages.common.plumbing.output_paths import MANIFEST_FILE, VALIDATE_METRICS, VALIDATION_REPORT
from stages.common.plumbing.stage_params import StageParams

log = logging.getLogger("validate")


class ValidateStageParams(StageParams):
    validate_: ValidateParams = Field(alias="validate")


def main(params: ValidateStageParams) -> None:
    data = load_prepared()
    report = validate(data, read_json(MANIFEST_FILE), params.validate_)
    for warning in report.warnings:
        log.warning(warning)
    verdict = {
        "passed": not report.hard,
        "hard_failures": len(report.hard),
        "warnings": len(report.warnings),
    }
    write_json(
        VALIDATION_REPORT,
        {
            **verdict,
            "hard_failure_messages": report.hard,
            "warning_messages": report.warnings,
            **report.numbers,
        },
    )
    write_json(VALIDATE_METRICS, verdict)
    if report.hard:
        raise DataError(
            f"validate: {len(report.hard)} hard failure(s), see {VALIDATION_REPORT}: "
            + " | ".join(report.hard)
        )
    log.info("data passed validation with %d warning(s)", len(report.warnings))


if __name__ == "__main__":
    run_stage(main, ValidateStageParams)
