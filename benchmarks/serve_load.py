"""Load on the prediction service: N concurrent clients for a while, then a burst.

Starts ``python -m stages.serve`` on a free loopback port with the model given (a released
checkpoint or the exported ONNX file), sends one CIFAR-sized PNG per request from ``--clients``
clients (each waits for its answer before the next request) for ``--seconds``, then
``--burst`` requests at once, ``--rounds`` times; prints JSON per round: requests/s, latency
p50/p95/p99 in ms, errors by status, and the server's resident memory at the start and after
each phase (a second round shows whether memory keeps growing or has settled).

    python -m benchmarks.serve_load --project . --model export/model.onnx
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests import services

ROOT = Path(__file__).resolve().parents[1]


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for process {pid}")


def sample_images(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buffer, "PNG")
        blobs.append(buffer.getvalue())
    return blobs


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()

    async def request(self, client: httpx.AsyncClient, blob: bytes) -> None:
        started = time.perf_counter()
        try:
            answer = await client.post(
                "/v1/predict", files=[("files", ("x.png", blob, "image/png"))]
            )
            self.statuses[str(answer.status_code)] += 1
        except httpx.HTTPError as error:
            self.statuses[type(error).__name__] += 1
        self.latencies.append(time.perf_counter() - started)

    def summary(self, seconds: float) -> dict:
        ms = np.asarray(self.latencies) * 1000
        ok = self.statuses.get("200", 0)
        return {
            "requests": len(self.latencies),
            "requests_per_second": round(len(self.latencies) / seconds, 1),
            "latency_ms": {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
            "errors": {status: n for status, n in self.statuses.items() if status != "200"},
            "ok": ok,
        }


async def steady(base: str, clients: int, seconds: float, blobs: list[bytes]) -> dict:
    tally = Tally()
    deadline = time.perf_counter() + seconds

    async def client_loop(index: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            turn = index
            while time.perf_counter() < deadline:
                await tally.request(client, blobs[turn % len(blobs)])
                turn += clients

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    return tally.summary(time.perf_counter() - started)


async def burst(base: str, count: int, blobs: list[bytes]) -> dict:
    tally = Tally()
    limits = httpx.Limits(max_connections=count)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        await asyncio.gather(*(tally.request(client, blobs[i % len(blobs)]) for i in range(count)))
    return tally.summary(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--project", type=Path, default=Path("."), help="a clone with results (default: here)"
    )
    parser.add_argument("--model", default="release/model.safetensors")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    port = services.free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "stages.serve", "--model", args.model, "--port", str(port)],
        cwd=args.project,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's code, the project's files
    )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            services.wait_until_healthy(
                base, lambda: None if server.poll() is None else "the server exited"
            )
        except RuntimeError as error:
            sys.exit(f"the server did not start: {error}")
        card = httpx.get(f"{base}/v1/model").json()
        blobs = sample_images(64)
        memory = {"start_mb": resident_mb(server.pid)}
        rounds = []
        for index in range(1, args.rounds + 1):
            steady_result = asyncio.run(steady(base, args.clients, args.seconds, blobs))
            memory[f"round_{index}_after_steady_mb"] = resident_mb(server.pid)
            burst_result = asyncio.run(burst(base, args.burst, blobs))
            memory[f"round_{index}_after_burst_mb"] = resident_mb(server.pid)
            rounds.append(
                {
                    f"steady_{args.clients}_clients_{args.seconds:g}s": steady_result,
                    f"burst_{args.burst}": burst_result,
                }
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        json.dumps(
            {
                "model": args.model,
                "architecture": card["architecture"],
                "runtime": card["runtime"],
                "inference": card["inference"],
                "cpu_count": os.cpu_count(),
                "rounds": rounds,
                "server_memory": memory,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
