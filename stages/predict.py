"""predict: classify your own images with a trained model (a command, not a pipeline stage).

    python -m stages.predict resnet photos/ cat.jpg                 # a model of params.yaml
    python -m stages.predict models/vit/model.safetensors img/ --top-k 3 --out preds.csv

Images of any size or mode are converted the way CIFAR-10 was made (RGB, shorter side to
32 px, centre crop). For a model of params.yaml that evaluation has scored
(evaluation/<model>/details.json), predictions use the test-time augmentation it used and the
temperature it fitted on those logits; the released model (release/model.safetensors) carries
the same settings in its metadata; --tta and --temperature override them. A file that cannot be
read gets an error in its row; the others are still classified. Output: a table on stdout, or
CSV/JSON with --out.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np
from tqdm import tqdm

from stages.common.data.images import IMAGE_SUFFIXES, decode_image
from stages.common.models.checkpoint import InferenceSettings
from stages.common.models.inference import LoadedModel, load_model, probabilities
from stages.common.plumbing.command import run_command
from stages.common.plumbing.errors import ParamsError
from stages.common.plumbing.files import writable, write_atomic, write_json
from stages.common.plumbing.output_paths import paths
from stages.common.plumbing.param_types import TtaMode

log = logging.getLogger("predict")


@dataclass
class Prediction:
    file: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str = ""


@dataclass
class Evaluated:
    """A model file, and what its evaluation settled when it is a model of params.yaml that
    evaluation has scored (else the file's own settings apply: see main)."""

    checkpoint: Path
    settings: InferenceSettings | None = None


def resolve_model(model: str) -> Evaluated:
    """A checkpoint path, or a model name of params.yaml with its evaluation's settings."""
    candidate = Path(model)
    if candidate.suffix == ".safetensors" or candidate.is_file():
        return Evaluated(candidate)
    where = paths(model)
    if not where.checkpoint.is_file():
        raise ParamsError(
            f"{model}: neither a checkpoint file nor a trained model "
            f"({where.checkpoint} not found; `dvc pull` or `dvc repro train@{model}`)"
        )
    if not where.evaluation_details.is_file():
        return Evaluated(where.checkpoint)
    return Evaluated(where.checkpoint, InferenceSettings.of_evaluation(where.evaluation_details))


def image_files(inputs: list[Path]) -> list[Path]:
    """The files named and the image files inside the folders named, in a stable order. A
    path that does not exist is a mistake in the command (one line, exit 2)."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = [p for p in sorted(item.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                log.warning("%s: no image files found", item)
            files += found
        elif item.exists() or item.is_symlink():
            files.append(item)
        else:
            raise ParamsError(f"inputs: '{item}' does not exist")
    return files


def read_images(files: list[Path]) -> tuple[np.ndarray, list[Prediction]]:
    """(N, 32, 32, 3) uint8 of the readable files, and one Prediction row per file."""
    images, rows = [], []
    for path in tqdm(files, desc="reading", disable=None if len(files) > 50 else True):
        row = Prediction(str(path))
        rows.append(row)
        try:
            if not path.is_file():  # a named pipe or a device would block the read forever
                image, problem = None, "not a regular file (not read)"
            else:
                image, problem = decode_image(path.read_bytes(), convert=True)
        except OSError as error:
            image, problem = None, f"unreadable ({error.strerror or error})"
        if image is None:
            row.error = problem
            log.warning("%s: %s; skipped", path, problem)
        else:
            images.append(image)
    stacked = np.stack(images) if images else np.zeros((0, 32, 32, 3), np.uint8)
    return stacked, rows


def classify(
    loaded: LoadedModel,
    images: np.ndarray,
    rows: list[Prediction],
    top_k: int,
    temperature: float,
    tta: str,
    batch_size: int,
) -> None:
    if not len(images):
        return
    progress = "classifying" if len(images) > batch_size else None
    scores = probabilities(loaded, images, batch_size, tta, temperature, progress)
    readable = (row for row in rows if not row.error)
    for row, probs in zip(readable, scores):
        best = np.argsort(-probs, kind="stable")[:top_k]
        row.top = [(loaded.classes[i], float(probs[i])) for i in best]


def render(rows: list[Prediction], top_k: int, out: Path | None) -> None:
    records = [
        {
            "file": row.file,
            **{f"class_{k + 1}": row.top[k][0] if row.top else "" for k in range(top_k)},
            **{f"probability_{k + 1}": row.top[k][1] if row.top else "" for k in range(top_k)},
            "error": row.error,
        }
        for row in rows
    ]
    if out is None:
        for row in rows:
            shown = ", ".join(f"{name} {p:.1%}" for name, p in row.top) or f"error: {row.error}"
            print(f"{row.file}: {shown}")
    elif out.suffix == ".json":
        write_json(out, records)
    elif out.suffix == ".csv":

        def write(temp: Path) -> None:
            with temp.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)

        write_atomic(out, write)
    else:
        raise ParamsError(f"--out: '{out}' must end in .csv or .json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", help="a key of `models` in params.yaml, or a .safetensors checkpoint"
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="image files and folders")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--temperature", type=float, help="override the fitted temperature")
    parser.add_argument(
        "--tta", choices=get_args(TtaMode), help="override the evaluation's test-time augmentation"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, help="a .csv or .json file (default: print a table)")
    args = parser.parse_args()
    if args.out is not None and args.out.suffix not in (".csv", ".json"):
        raise ParamsError(f"--out: '{args.out}' must end in .csv or .json")
    if args.out is not None and (problem := writable(args.out)):
        raise ParamsError(f"--out: {problem}")
    for option in ("top_k", "batch_size"):
        if getattr(args, option) < 1:
            flag = "--" + option.replace("_", "-")
            raise ParamsError(f"{flag}: must be 1 or more, got {getattr(args, option)}")
    if args.temperature is not None and not (
        math.isfinite(args.temperature) and args.temperature > 0
    ):
        raise ParamsError(f"--temperature: must be a finite number > 0, got {args.temperature}")
    evaluated = resolve_model(args.model)
    loaded = load_model(evaluated.checkpoint)
    # the evaluation's settings for a model of params.yaml; a released file carries its own
    settings = evaluated.settings or loaded.info.inference or InferenceSettings()
    temperature = args.temperature or settings.temperature
    tta = args.tta or settings.tta
    top_k = max(1, min(args.top_k, len(loaded.classes)))
    files = image_files(args.inputs)
    if not files:
        raise ParamsError("inputs: no image files found")
    images, rows = read_images(files)
    classify(loaded, images, rows, top_k, temperature, tta, args.batch_size)
    render(rows, top_k, args.out)
    failed = sum(1 for row in rows if row.error)
    log.info(
        "%d image(s) classified with %s (TTA %s, temperature %.2f)%s",
        len(rows) - failed,
        evaluated.checkpoint,
        tta,
        temperature,
        f"; {failed} unreadable" if failed else "",
    )


if __name__ == "__main__":
    run_command(main)
