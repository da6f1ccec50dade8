"""prepare: read data.source into the canonical uint8 arrays with a stratified train/val split."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from stages.common.cli import run_stage
from stages.common.dataset import MANIFEST_FILE, SPLITS, build_prepared, save_prepared
from stages.common.io import write_json
from stages.common.params import Params
from stages.common.sources import read_source

log = logging.getLogger("prepare")
METRICS_FILE = Path("metrics/prepare.json")


def main(params: Params) -> None:
    started = time.perf_counter()
    data_params = params.data
    raw = read_source(data_params.source, Path(data_params.download_dir), data_params.on_bad_image)
    data = build_prepared(raw, data_params.val_ratio, params.seed, data_params.subset)
    counts = {name: len(data.split(name).labels) for name in SPLITS}
    per_class = {
        name: np.bincount(data.split(name).labels, minlength=len(data.classes)).tolist()
        for name in SPLITS
    }
    manifest = {
        "source": data_params.source,
        "source_kind": raw.source_kind,
        "classes": data.classes,
        "counts": counts,
        "per_class": per_class,
        "content_sha256": data.content_hash(),
        "skipped": raw.skipped,
        "seed": params.seed,
        "val_ratio": data_params.val_ratio,
        "subset": data_params.subset,
    }
    save_prepared(data)
    write_json(MANIFEST_FILE, manifest)
    write_json(
        METRICS_FILE,
        {**{f"{k}_images": v for k, v in counts.items()}, "skipped_images": len(raw.skipped)},
    )
    log.info(
        "prepared %s images (%s) from %s in %.1fs; %d skipped",
        sum(counts.values()),
        ", ".join(f"{k} {v}" for k, v in counts.items()),
        data_params.source,
        time.perf_counter() - started,
        len(raw.skipped),
    )


if __name__ == "__main__":
    run_stage(main)
