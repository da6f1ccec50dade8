"""Where the per-model stages write, in one place, so writers and readers agree."""

from __future__ import annotations

from pathlib import Path


def model_file(name: str) -> Path:
    """train@<name>'s best checkpoint."""
    return Path("models") / name / "model.pt"


def live_dir(name: str) -> Path:
    """train@<name>'s DVCLive directory (metrics.json and per-epoch plots)."""
    return Path("dvclive") / name


def resume_file(name: str) -> Path:
    """train@<name>'s resumable state while it runs (not a DVC output)."""
    return Path("checkpoints") / name / "resume.pt"


def evaluation_paths(name: str) -> dict[str, Path]:
    """What evaluate@<name> reads (the model) and writes."""
    return {
        "model": model_file(name),
        "metrics": Path("metrics/evaluate") / f"{name}.json",
        "predictions": Path("evaluation") / name / "predictions.npz",
        "live": Path("evaluation") / name / "live",
        "plots": Path("plots/evaluate") / name,
    }
