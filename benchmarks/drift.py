"""Drift detection on a real release: false alarms on clean traffic, and how many images each
real shift takes to ring.

The test split is cut in two at random: a reference is made from one half exactly as compare
makes the release's (stages/common/release/publish.py), and the other half is the clean
traffic, never seen by the reference. The monitor is the service's own (DriftMonitor, fed one
image at a time as clients send them). Clean: the whole held-out half streamed ``--rounds``
times in new orders; false alarms are tests of the window that said drift. Shifts: after a
window of clean traffic, the robustness stage's corruptions (fog, gaussian_noise, contrast at
each severity) and a stream of two classes; N is the images from the shift's start to the
first alarm.

    python -m benchmarks.drift --project . [--window 500] [--alpha 0.001]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from stages.common.data.prepared import load_prepared
from stages.common.evaluation.corruptions import corrupt
from stages.common.monitoring.drift import DriftMonitor, DriftSettings, reference_of
from stages.common.release.released_model import load_backend

SHIFTS = ("fog", "gaussian_noise", "contrast")
SEVERITIES = (3, 4, 5)
MAX_SHIFT_IMAGES = 2000  # a shift not rung by then is reported as not rung


def stream(
    monitor: DriftMonitor, images: np.ndarray, probabilities: np.ndarray, until_alarm: bool
) -> int | None:
    """Feed one image at a time (all of them, or until the first alarm); the images until the
    first alarm, or None."""
    for index in range(len(images)):
        monitor.observe(images[index : index + 1], probabilities[index : index + 1])
        if until_alarm and monitor.verdict == "drift":
            return index + 1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--model", default="release/model.safetensors")
    parser.add_argument("--window", type=int, default=DriftSettings.window)
    parser.add_argument("--alpha", type=float, default=DriftSettings.alpha)
    parser.add_argument("--rounds", type=int, default=4, help="passes over the clean half")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.chdir(args.project)
    backend = load_backend(Path(args.model))
    test = load_prepared().test
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(test.images))
    half = len(order) // 2
    held_in, held_out = order[:half], order[half:]
    probabilities = backend.probabilities(test.images)
    reference = reference_of(test.images[held_in], probabilities[held_in], backend.info.classes)
    settings = DriftSettings(window=args.window, alpha=args.alpha)
    monitor = DriftMonitor(reference, settings)
    for _ in range(args.rounds):
        shuffled = rng.permutation(held_out)
        stream(monitor, test.images[shuffled], probabilities[shuffled], until_alarm=False)
    clean = {
        "images": monitor.seen,
        "tests": monitor.checks,
        "false_alarms": monitor.alarms,
        "false_alarm_rate_per_test": monitor.alarms / max(monitor.checks, 1),
    }
    shifted: dict[str, int | None] = {}
    cases = [(name, severity) for name in SHIFTS for severity in SEVERITIES]
    for name, severity in [*cases, ("two classes", 0)]:
        warm = rng.permutation(held_out)[: args.window]
        monitor = DriftMonitor(reference, settings)
        stream(monitor, test.images[warm], probabilities[warm], until_alarm=False)
        picked = rng.permutation(held_out)
        if severity:
            picked = picked[:MAX_SHIFT_IMAGES]
            images = corrupt(test.images[picked], name, severity, args.seed, picked)
            shifted_probabilities = backend.probabilities(images)
        else:
            picked = picked[np.isin(test.labels[picked], [3, 5])][:MAX_SHIFT_IMAGES]
            images, shifted_probabilities = test.images[picked], probabilities[picked]
        key = f"{name} {severity}" if severity else name
        shifted[key] = stream(monitor, images, shifted_probabilities, until_alarm=True)
        print(f"{key}: {shifted[key]} images to the alarm", flush=True)
    print(
        json.dumps(
            {
                "model": args.model,
                "architecture": backend.info.architecture,
                "reference_images": len(held_in),
                "window": args.window,
                "alpha": args.alpha,
                "clean": clean,
                "images_to_alarm": shifted,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
