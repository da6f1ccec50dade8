"""prepare: read data.source into the canonical uint8 arrays with a stratified train/val split."""

from __future__ import annotations

import logging
import time

import numpy as np

from stages.common.config.data import DataParams
from stages.common.data.prepared import SPLITS, save_prepared
from stages.common.data.sources import read_source
from stages.common.data.splitting import build_prepared, subset_shortfall
from stages.common.plumbing.command import run_stage
from stages.common.plumbing.files import write_json
from stages.common.plumbing.output_paths import MANIFEST_FILE, PREPARE_METRICS
from stages.common.plumbing.param_types import Seed
from stages.common.plumbing.stage_params import StageParams

log = logging.getLogger("prepare")


class PrepareParams(StageParams):
    seed: Seed
    data: DataParams


def main(params: PrepareParams) -> None:
    started = time.perf_counter()
    settings = params.data
    raw = read_source(settings.source, settings.on_bad_image, settings.classes)
    notes = subset_shortfall(raw, settings.subset) if settings.subset else []
    for note in notes:
        log.warning(note)
    data = build_prepared(raw, settings.val_ratio, params.seed, settings.subset)
    counts = {name: len(data.split(name).labels) for name in SPLITS}
    # nothing here names the source's path: the same images moved elsewhere prepare to the
    # same bytes, and the stages after prepare stay cached
    manifest = {
        "source_kind": raw.source_kind,
        "classes": data.classes,
        "counts": counts,
        "per_class": {
            name: np.bincount(data.split(name).labels, minlength=len(data.classes)).tolist()
            for name in SPLITS
        },
        "content_sha256": data.content_hash(),
        "skipped": raw.skipped,
        "ignored_files": raw.ignored,
        "notes": notes,
        "seed": params.seed,
        "val_ratio": settings.val_ratio,
        "subset": settings.subset,
    }
    save_prepared(data)
    write_json(MANIFEST_FILE, manifest)
    write_json(
        PREPARE_METRICS,
        {**{f"{k}_images": v for k, v in counts.items()}, "skipped_images": len(raw.skipped)},
    )
    log.info(
        "prepared %s images (%s) from %s in %.1fs; %d skipped",
        sum(counts.values()),
        ", ".join(f"{k} {v}" for k, v in counts.items()),
        settings.source,
        time.perf_counter() - started,
        len(raw.skipped),
    )


if __name__ == "__main__":
    run_stage(main, PrepareParams)
