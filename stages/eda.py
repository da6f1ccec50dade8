"""eda: plots, numbers and a short markdown report of the prepared data."""

from __future__ import annotations

import logging
from pathlib import Path

from stages.common.config.data import EdaParams
from stages.common.data import profile
from stages.common.data.checks import channel_stats
from stages.common.data.prepared import SPLITS, load_prepared
from stages.common.plumbing.command import run_stage
from stages.common.plumbing.files import save_figure, write_json, write_text
from stages.common.plumbing.output_paths import EDA_DETAILS, EDA_PLOTS, EDA_REPORT
from stages.common.plumbing.param_types import Seed
from stages.common.plumbing.stage_params import StageParams

log = logging.getLogger("eda")


class EdaStageParams(StageParams):
    seed: Seed
    eda: EdaParams


def main(params: EdaStageParams) -> None:
    data = load_prepared()
    figures = {
        "class_balance.png": profile.class_balance_figure(data),
        "channel_histograms.png": profile.channel_histogram_figure(data, params.eda.hist_bins),
        "samples.png": profile.sample_grid_figure(data, params.eda.samples_per_class, params.seed),
        "class_means.png": profile.class_mean_figure(data),
    }
    for name, figure in figures.items():
        save_figure(figure, EDA_PLOTS / name)

    split_stats = {}
    for name in SPLITS:
        mean, std = channel_stats(data.split(name).images)
        split_stats[name] = {
            "images": len(data.split(name).labels),
            "channel_mean": dict(zip("rgb", mean.round(4).tolist())),
            "channel_std": dict(zip("rgb", std.round(4).tolist())),
        }
    per_class = profile.class_channel_stats(data)
    write_json(EDA_DETAILS, {"splits": split_stats, "train_per_class": per_class})
    write_text(EDA_REPORT, render_report(data.classes, split_stats, per_class, list(figures)))
    log.info("wrote %d plots to %s and the report %s", len(figures), EDA_PLOTS, EDA_REPORT)


def render_report(
    classes: list[str],
    split_stats: dict[str, dict],
    per_class: dict[str, dict[str, list[float]]],
    figures: list[str],
) -> str:
    relative = Path("..") / EDA_PLOTS
    lines = ["# CIFAR-10: exploratory data analysis", "", "## Splits", ""]
    lines += ["| split | images | mean (R, G, B) | std (R, G, B) |", "|---|---:|---|---|"]
    for name, stats in split_stats.items():
        mean = ", ".join(f"{v:.3f}" for v in stats["channel_mean"].values())
        std = ", ".join(f"{v:.3f}" for v in stats["channel_std"].values())
        lines.append(f"| {name} | {stats['images']} | {mean} | {std} |")
    lines += ["", "## Training images per class", ""]
    lines += ["| class | mean (R, G, B) | std (R, G, B) |", "|---|---|---|"]
    for class_name in classes:
        stats = per_class[class_name]
        mean = ", ".join(f"{v:.3f}" for v in stats["mean"])
        std = ", ".join(f"{v:.3f}" for v in stats["std"])
        lines.append(f"| {class_name} | {mean} | {std} |")
    lines += ["", "## Plots", ""]
    for figure in figures:
        title = figure.removesuffix(".png").replace("_", " ").capitalize()
        lines += [f"### {title}", "", f"![{title}]({(relative / figure).as_posix()})", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    run_stage(main, EdaStageParams)
