"""serve: the released model behind HTTP (FastAPI on uvicorn; a command, not a pipeline stage).

    bash run.sh serve                                       # release/model.safetensors, :8000
    bash run.sh serve --model export/model.onnx --host 0.0.0.0 --port 8000
    bash run.sh serve --model A=release/model.safetensors --model B=old/model.safetensors \
        --split 0.9                                         # an A/B test: 90% of clients to A

The routes: stages/common/release/service.py; the models, their cards and batchers:
release/variants.py; /metrics, drift and the A/B test: stages/common/monitoring/. What keeps it
answering under hostile clients (deadlines for headers and bodies, a cap on connections, the body
counted as it arrives, refusals logged once per kind): stages/common/release/http_guard.py.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from stages.common.monitoring.drift import DriftSettings
from stages.common.plumbing.command import run_command
from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.output_paths import RELEASE_CHECKPOINT
from stages.common.release.http_guard import Limits, RefusalLog, guarded_protocol, raise_file_limit
from stages.common.release.service import create_app, log
from stages.common.release.variants import load_variant

VARIANT_NAMES = ("A", "B")


def positive(option: str, value: float, most: float | None = None) -> None:
    if value <= 0 or (most is not None and value > most):
        bounds = f"between 1 and {most:g}" if most is not None else "above 0"
        raise ParamsError(f"{option}: must be {bounds}, got {value:g}")


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        metavar="[NAME=]FILE",
        help="a .safetensors checkpoint (PyTorch) or an .onnx file of `stages.export`; twice "
        f"for an A/B test (names A and B unless given; default {RELEASE_CHECKPOINT})",
    )
    parser.add_argument(
        "--split",
        type=float,
        default=0.5,
        help="with two models: the share of clients the first one answers",
    )
    parser.add_argument(
        "--drift-window", type=int, default=DriftSettings.window, help="images tested for drift"
    )
    parser.add_argument(
        "--drift-alpha",
        type=float,
        default=DriftSettings.alpha,
        help="false-alarm rate per test of the window, all features together",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch", type=int, default=64, help="images per forward pass")
    parser.add_argument(
        "--max-connections", type=int, default=Limits.max_connections, help="open at once"
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=Limits.header_seconds,
        help="seconds a client has to send a request's headers",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=Limits.body_seconds,
        help="seconds a client has to send a request's body",
    )
    args = parser.parse_args()
    positive("--port", args.port, 65535)
    positive("--max-batch", args.max_batch)
    positive("--max-connections", args.max_connections)
    positive("--header-timeout", args.header_timeout)
    positive("--body-timeout", args.body_timeout)
    positive("--drift-window", args.drift_window)
    if not 0 < args.drift_alpha < 1:
        raise ParamsError(f"--drift-alpha: must be between 0 and 1, got {args.drift_alpha:g}")
    args.models = named_models(args.model or [str(RELEASE_CHECKPOINT)])
    if len(args.models) == 1:
        args.split = 1.0
    elif not 0 < args.split < 1:
        raise ParamsError(f"--split: must be between 0 and 1, got {args.split:g}")
    return args


def named_models(specs: list[str]) -> dict[str, Path]:
    """``[NAME=]FILE`` options as {name: file}: at most two, names unique, files present."""
    if len(specs) > len(VARIANT_NAMES):
        raise ParamsError(f"--model: {len(specs)} given; at most {len(VARIANT_NAMES)} (A and B)")
    models: dict[str, Path] = {}
    for default, spec in zip(VARIANT_NAMES, specs, strict=False):
        name, _, file = spec.rpartition("=") if "=" in spec else (default, "", spec)
        if not name.isidentifier() or name in models:
            raise ParamsError(f"--model {spec}: the name must be a new word, like A or candidate")
        path = Path(file)
        if not path.is_file():
            raise ParamsError(
                f"--model: '{path}' not found (`dvc pull` or `dvc repro` makes "
                f"{RELEASE_CHECKPOINT}; `dvc repro export` the ONNX file)"
            )
        models[name] = path
    return models


def main() -> None:
    args = parse_options()
    drift = DriftSettings(window=args.drift_window, alpha=args.drift_alpha)
    variants = [
        load_variant(name, path, args.max_batch, drift) for name, path in args.models.items()
    ]
    if len({tuple(variant.backend.info.classes) for variant in variants}) > 1:
        first, second = variants
        raise ParamsError(
            f"--model: {second.backend.path} has other classes than {first.backend.path}: "
            f"{second.backend.info.classes} vs {first.backend.info.classes}"
        )
    connections = raise_file_limit(args.max_connections)
    limits = Limits(args.header_timeout, args.body_timeout, connections)
    refusals = RefusalLog(log)
    app = create_app(variants, args.split, limits=limits, refusals=refusals)
    for variant in variants:
        share = args.split if variant is variants[0] else 1 - args.split
        log.info(
            "%s: %s (%s, %s), %.0f%% of clients; drift: %s",
            variant.name,
            variant.backend.path,
            variant.backend.info.architecture,
            variant.backend.runtime,
            share * 100,
            variant.drift_note or f"window of {drift.window} images, alpha {drift.alpha:g}",
        )
    log.info(
        "on http://%s:%d (docs at /docs, metrics at /metrics); at most %d connections, %g s "
        "for headers, %g s for a body",
        args.host,
        args.port,
        connections,
        args.header_timeout,
        args.body_timeout,
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        http=guarded_protocol(limits, refusals),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
    )


if __name__ == "__main__":
    run_command(main)
