"""serve: the released model behind HTTP (FastAPI on uvicorn; a command, not a pipeline stage).

    bash run.sh serve                                       # release/model.safetensors, :8000
    bash run.sh serve --model export/model.onnx --host 0.0.0.0 --port 8000

The routes, the batcher and the model card: stages/common/release/service.py. What keeps it
answering under hostile clients (deadlines for headers and bodies, a cap on connections, the body
counted as it arrives, refusals logged once per kind): stages/common/release/http_guard.py.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from stages.common.plumbing.command import run_command
from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.output_paths import RELEASE_CHECKPOINT
from stages.common.release.http_guard import Limits, RefusalLog, guarded_protocol, raise_file_limit
from stages.common.release.released_model import load_backend
from stages.common.release.service import create_app, log, model_card


def positive(option: str, value: float, most: float | None = None) -> None:
    if value <= 0 or (most is not None and value > most):
        bounds = f"between 1 and {most:g}" if most is not None else "above 0"
        raise ParamsError(f"{option}: must be {bounds}, got {value:g}")


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=RELEASE_CHECKPOINT,
        help="a .safetensors checkpoint (PyTorch) or an .onnx file of `stages.export`",
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
    if not args.model.is_file():
        raise ParamsError(
            f"--model: '{args.model}' not found (`dvc pull` or `dvc repro` makes "
            f"{RELEASE_CHECKPOINT}; `dvc repro export` the ONNX file)"
        )
    return args


def main() -> None:
    args = parse_options()
    backend = load_backend(args.model)
    connections = raise_file_limit(args.max_connections)
    limits = Limits(args.header_timeout, args.body_timeout, connections)
    refusals = RefusalLog(log)
    app = create_app(backend, model_card(backend), args.max_batch, limits=limits, refusals=refusals)
    log.info(
        "%s (%s, %s) on http://%s:%d (docs at /docs); at most %d connections, %g s for "
        "headers, %g s for a body",
        args.model,
        backend.info.architecture,
        backend.runtime,
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
