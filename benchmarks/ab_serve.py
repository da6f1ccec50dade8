"""An A/B test under load: two models served side by side, clients sending real test images
and then their true labels, and the service's per-variant accuracy and test converging.

Starts ``python -m stages.serve --model A=... --model B=... --split S`` on a free loopback port.
``--clients`` concurrent clients each pick a user id from ``--users`` (sticky routing), send one
test image of the project's prepared test split, then POST its true label to /v1/feedback.
Every ``--every`` labels the service's GET /v1/ab is read; the rows (labels per variant,
accuracies with their intervals, p-value, verdict) print as they come, then JSON with the
latency of the predictions. ``--plot`` draws the accuracies and the p-value against labels.

    python -m benchmarks.ab_serve --project . --model A=release/model.safetensors \\
        --model B=other/model.safetensors --split 0.5 --labels 3000 --plot ab.png
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from stages.common.data.prepared import load_prepared
from stages.common.plumbing.files import save_figure
from tests import services
from tests.synthetic import png_bytes

ROOT = Path(__file__).resolve().parents[1]


async def run_clients(base: str, args: argparse.Namespace, images, labels, classes) -> dict:
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(images))
    labelled, snapshots, latencies = 0, [], []
    lock = asyncio.Lock()

    async def client_loop(index: int) -> None:
        nonlocal labelled
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            turn = index
            while labelled < args.labels:
                image = order[turn % len(order)]
                turn += args.clients
                user = f"user-{rng.integers(args.users)}"
                started = time.perf_counter()
                answer = await client.post(
                    "/v1/predict",
                    files=[("files", ("x.png", png_bytes(images[image]), "image/png"))],
                    headers={"x-client-id": user},
                )
                latencies.append(time.perf_counter() - started)
                answer.raise_for_status()
                prediction_id = answer.json()["predictions"][0]["id"]
                feedback = {"prediction_id": prediction_id, "label": classes[labels[image]]}
                (await client.post("/v1/feedback", json=feedback)).raise_for_status()
                async with lock:
                    labelled += 1
                    if labelled % args.every == 0:
                        report = (await client.get("/v1/ab")).json()
                        snapshots.append({"labels": labelled, **report})
                        print(row(report, labelled), flush=True)

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(i) for i in range(args.clients)))
    seconds = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {
        "predictions_per_second": round(len(latencies) / seconds, 1),
        "latency_ms": {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
        "snapshots": snapshots,
    }


def row(report: dict, labelled: int) -> str:
    cells = [f"{labelled:>6} labels"]
    for name, variant in report["variants"].items():
        if variant["accuracy"] is None:
            cells.append(f"{name}: -")
            continue
        low, high = variant["interval"]
        cells.append(
            f"{name}: {variant['labelled']:>5} at {variant['accuracy']:.3f} [{low:.3f}, {high:.3f}]"
        )
    if "p_value" in report:
        cells.append(f"p {report['p_value']:.2e}: {report['verdict']}")
    return " | ".join(cells)


def plot(snapshots: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    labels = [s["labels"] for s in snapshots]
    for name in snapshots[-1]["variants"]:
        rows = [s["variants"][name] for s in snapshots]
        kept = [(n, r) for n, r in zip(labels, rows, strict=True) if r["accuracy"] is not None]
        xs = [n for n, _ in kept]
        top.plot(xs, [r["accuracy"] for _, r in kept], label=f"{name}")
        top.fill_between(
            xs, [r["interval"][0] for _, r in kept], [r["interval"][1] for _, r in kept], alpha=0.2
        )
    top.set_ylabel("accuracy on labels sent back (95% Wilson)")
    top.legend()
    tested = [(n, s["p_value"]) for n, s in zip(labels, snapshots, strict=True) if "p_value" in s]
    bottom.semilogy([n for n, _ in tested], [p for _, p in tested])
    bottom.axhline(snapshots[-1]["alpha"], color="grey", linestyle="--", label="alpha")
    bottom.set_ylabel("Fisher exact p-value")
    bottom.set_xlabel("labels sent back (all variants)")
    bottom.legend()
    figure.suptitle("A/B test under load: per-variant accuracy converging")
    save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FILE")
    parser.add_argument("--split", type=float, default=0.5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--labels", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    project = args.project.resolve()
    test = load_prepared(project / "data/prepared/cifar10.npz")
    port = services.free_port()
    models = [part for spec in args.model for part in ("--model", spec)]
    options = [*models, "--split", str(args.split), "--port", str(port)]
    server = subprocess.Popen(
        [sys.executable, "-m", "stages.serve", *options],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        services.wait_until_healthy(
            base, lambda: None if server.poll() is None else "the server exited"
        )
        result = asyncio.run(
            run_clients(base, args, test.test.images, test.test.labels, test.classes)
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    if args.plot:
        plot(result["snapshots"], args.plot)
    final = result["snapshots"][-1] if result["snapshots"] else {}
    print(
        json.dumps(
            {
                "models": args.model,
                "split": args.split,
                "clients": args.clients,
                "predictions_per_second": result["predictions_per_second"],
                "latency_ms": result["latency_ms"],
                "final": final,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
