"""The validate stage's checks of the prepared data: hard failures stop the graph, soft
findings are warnings."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stages.common.config.data import ValidateParams
from stages.common.data.cifar10 import IMAGE_SHAPE
from stages.common.data.cifar10 import MEAN as REFERENCE_MEAN
from stages.common.data.cifar10 import STD as REFERENCE_STD
from stages.common.data.prepared import SPLITS, PreparedData

CHUNK = 8192


@dataclass
class Report:
    """What validate found; ``hard`` non-empty means the data must not be used."""

    max_listed: int
    hard: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)

    def listing(self, items: list[str]) -> str:
        shown = ", ".join(items[: self.max_listed])
        more = len(items) - self.max_listed
        return shown + (f" and {more} more" if more > 0 else "")


def check_structure(data: PreparedData, report: Report) -> bool:
    """Shapes, dtypes and label ranges; False when the arrays cannot be checked further."""
    usable = True
    for name in SPLITS:
        split = data.split(name)
        if split.images.ndim != 4 or split.images.shape[1:] != IMAGE_SHAPE:
            report.hard.append(
                f"{name}: images have shape {split.images.shape}, expected (N, 32, 32, 3)"
            )
            usable = False
        if split.images.dtype != np.uint8:
            report.hard.append(f"{name}: images are {split.images.dtype}, expected uint8")
            usable = False
        if split.labels.shape != (len(split.images),):
            report.hard.append(
                f"{name}: {split.labels.shape} labels for {len(split.images)} images"
            )
            usable = False
        bad = np.flatnonzero((split.labels < 0) | (split.labels >= len(data.classes)))
        report.numbers[f"{name}_labels_out_of_range"] = len(bad)
        if len(bad):
            report.hard.append(
                f"{name}: labels out of range [0, {len(data.classes) - 1}] at "
                + report.listing([f"{name}[{i}]={split.labels[i]}" for i in bad])
            )
            usable = False
    return usable


def check_classes(data: PreparedData, report: Report, params: ValidateParams) -> None:
    """Per-class counts: a missing class is fatal, imbalance is a warning."""
    for name in SPLITS:
        counts = np.bincount(data.split(name).labels, minlength=len(data.classes))
        report.numbers[f"{name}_per_class"] = dict(zip(data.classes, counts.tolist()))
        missing = [data.classes[i] for i in np.flatnonzero(counts == 0)]
        if missing:
            report.hard.append(f"{name}: no images of class {report.listing(missing)}")
            continue
        ratio = float(counts.max() / counts.min())
        report.numbers[f"{name}_imbalance"] = ratio
        if ratio > params.max_imbalance:
            report.warnings.append(
                f"{name}: class imbalance {ratio:.2f} (largest/smallest class) exceeds "
                f"validate.max_imbalance={params.max_imbalance}: "
                f"'{data.classes[counts.argmax()]}' {counts.max()}, "
                f"'{data.classes[counts.argmin()]}' {counts.min()}"
            )


def image_hashes(images: np.ndarray) -> list[bytes]:
    flat = images.reshape(len(images), -1)
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


def check_duplicates(data: PreparedData, report: Report, params: ValidateParams) -> None:
    """Exact duplicates within each split and across splits, by content hash."""
    first_seen: dict[str, dict[bytes, int]] = {}
    for name in SPLITS:
        seen: dict[bytes, int] = {}
        repeats = []
        for index, digest in enumerate(image_hashes(data.split(name).images)):
            if digest in seen:
                repeats.append(f"{name}[{index}]={name}[{seen[digest]}]")
            else:
                seen[digest] = index
        first_seen[name] = seen
        report.numbers[f"{name}_duplicates"] = len(repeats)
        if repeats:
            report.warnings.append(
                f"{name}: {len(repeats)} exact duplicate images: {report.listing(repeats)}"
            )

    for later, earlier in (("val", "train"), ("test", "train"), ("test", "val")):
        shared = [
            f"{later}[{index}]={earlier}[{first_seen[earlier][digest]}]"
            for digest, index in first_seen[later].items()
            if digest in first_seen[earlier]
        ]
        report.numbers[f"{later}_in_{earlier}"] = len(shared)
        if not shared:
            continue
        message = f"{len(shared)} {later} images also in {earlier}: {report.listing(shared)}"
        if later == "val":
            report.warnings.append(message)
            continue
        leakage = len(shared) / max(len(data.split(later).labels), 1)
        report.numbers[f"{later}_leakage_from_{earlier}"] = leakage
        if leakage > params.max_leakage:
            report.hard.append(
                f"leakage {leakage:.2%} > validate.max_leakage={params.max_leakage:.2%}: {message}"
            )
        else:
            report.warnings.append(message)


def per_image_std(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1)
    return np.concatenate(
        [flat[i : i + CHUNK].astype(np.float32).std(axis=1) for i in range(0, len(flat), CHUNK)]
    )


def check_blank(data: PreparedData, report: Report, params: ValidateParams) -> None:
    """Constant or nearly constant images (pixel std below validate.blank_std)."""
    for name in SPLITS:
        blank = np.flatnonzero(per_image_std(data.split(name).images) < params.blank_std)
        report.numbers[f"{name}_blank"] = len(blank)
        if len(blank):
            report.warnings.append(
                f"{name}: {len(blank)} blank or constant images (pixel std < "
                f"{params.blank_std}): " + report.listing([f"{name}[{i}]" for i in blank])
            )


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std on a 0..1 scale, accumulated in float64 chunks."""
    total = np.zeros(3)
    squares = np.zeros(3)
    for i in range(0, len(images), CHUNK):
        chunk = images[i : i + CHUNK].reshape(-1, 3).astype(np.float64) / 255.0
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
    count = max(len(images) * images.shape[1] * images.shape[2], 1)
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean**2, 0.0))


def sampling_margin(images: np.ndarray, errors: float = 3.0) -> float:
    """How far a sample of ``images`` may stray from the population's channel statistics by
    chance: ``errors`` standard errors of the channel means and stds (their spread over the
    images, over the square root of their number). On the real data that is about 0.1 for 20
    images, 0.03 for 200, 0.005 for 10,000: a small subset's chance drift is no warning."""
    flat = images.reshape(len(images), -1, 3)
    means, stds = [], []
    for i in range(0, len(flat), CHUNK):
        chunk = flat[i : i + CHUNK].astype(np.float32) / 255.0
        means.append(chunk.mean(axis=1))
        stds.append(chunk.std(axis=1))
    spread = max(np.concatenate(means).std(axis=0).max(), np.concatenate(stds).std(axis=0).max())
    return float(errors * spread / np.sqrt(max(len(images), 1)))


def check_drift(data: PreparedData, report: Report, params: ValidateParams) -> None:
    """Channel statistics of each split against the reference CIFAR-10 ones, beyond
    validate.drift_tolerance plus what the split's size allows by chance."""
    for name in SPLITS:
        images = data.split(name).images
        mean, std = channel_stats(images)
        margin = sampling_margin(images)
        report.numbers[f"{name}_channel_mean"] = dict(zip("rgb", mean.round(4).tolist()))
        report.numbers[f"{name}_channel_std"] = dict(zip("rgb", std.round(4).tolist()))
        drift = max(np.abs(mean - REFERENCE_MEAN).max(), np.abs(std - REFERENCE_STD).max())
        report.numbers[f"{name}_drift"] = float(drift)
        report.numbers[f"{name}_drift_sampling_margin"] = margin
        if drift > params.drift_tolerance + margin:
            report.warnings.append(
                f"{name}: channel statistics drift {drift:.3f} from reference CIFAR-10 "
                f"(> validate.drift_tolerance={params.drift_tolerance} + {margin:.3f} that "
                f"{len(images)} images may stray by chance): mean "
                f"{np.round(mean, 3).tolist()} vs {list(REFERENCE_MEAN)}, std "
                f"{np.round(std, 3).tolist()} vs {list(REFERENCE_STD)}"
            )


def check_skipped(manifest: dict[str, Any], report: Report) -> None:
    """Images prepare could not use (undecodable, wrong size or mode), files that are not
    images, and a subset larger than the source."""
    skipped = manifest.get("skipped", [])
    report.numbers["skipped_images"] = len(skipped)
    if skipped:
        report.warnings.append(
            f"prepare skipped {len(skipped)} unusable images: "
            + report.listing([f"{item['file']} ({item['problem']})" for item in skipped])
        )
    ignored = manifest.get("ignored_files", [])
    report.numbers["ignored_files"] = len(ignored)
    if ignored:
        report.warnings.append(
            f"prepare ignored {len(ignored)} files that are not images: " + report.listing(ignored)
        )
    report.warnings.extend(manifest.get("notes", []))


def validate(data: PreparedData, manifest: dict[str, Any], params: ValidateParams) -> Report:
    report = Report(max_listed=params.max_listed)
    check_skipped(manifest, report)
    if check_structure(data, report):
        check_classes(data, report, params)
        check_duplicates(data, report, params)
        check_blank(data, report, params)
        check_drift(data, report, params)
    return report
