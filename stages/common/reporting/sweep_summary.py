"""A sweep's summary in sweeps/<study>/: the trials as a table, the best one with the commands
that bring it back (best.json), Optuna's plots made readable."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from typing import Any

import numpy as np
import optuna
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.ticker import FuncFormatter, MaxNLocator
from optuna.trial import TrialState
from optuna.visualization import matplotlib as optuna_plots

from stages.common.plumbing.files import save_figure, write_json, write_text
from stages.common.tuning.sweep import Sweep, short_value

log = logging.getLogger("sweep")
TRUSTED_IMPORTANCE_TRIALS = 20  # fewer complete trials: the importances plot comes with a warning


def write_results(sweep: Sweep, study: Any) -> None:
    """summary.md (the trials, the best one, Optuna's plots), best.json and the plots, in
    sweeps/<study>/."""
    lines = trial_table(sweep, study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        lines += write_best(sweep, study.best_trial)
        lines += draw_plots(sweep, study, len(complete))
    write_text(sweep.folder / "summary.md", "\n".join(lines) + "\n")


def trial_table(sweep: Sweep, study: Any) -> list[str]:
    trials = study.get_trials(deepcopy=False)
    space = sweep.params.tune.space
    count = Counter(t.state for t in trials)
    lines = [
        f"# Sweep {sweep.study_name}: {sweep.model}, {sweep.params.tune.objective} "
        f"({study.direction.name.lower()})",
        "",
        f"{count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} pruned, "
        f"{count[TrialState.FAIL]} failed; {sweep.epochs} epochs per trial. Trials count from "
        f"1, as in the experiments' names ({sweep.experiment_name(0)} is trial 1; Optuna's own "
        "number is one less).",
        "",
        "| trial | experiment | state | value | epochs | " + " | ".join(space) + " |",
        "|---:|---|---|---:|---:|" + "---|" * len(space),
    ]
    for t in trials:
        value = f"{t.value:.4f}" if t.value is not None else "-"
        cells = [short_value(t.params.get(key, "-")) for key in space]
        lines.append(
            f"| {t.number + 1} | {t.user_attrs.get('experiment', '-')} | {t.state.name.lower()} "
            f"| {value} | {len(t.intermediate_values)} | " + " | ".join(cells) + " |"
        )
    return lines


def write_best(sweep: Sweep, best: Any) -> list[str]:
    """best.json; summary.md's lines about the best trial."""
    experiment = best.user_attrs["experiment"]
    commands = {
        "apply": f"dvc exp apply {experiment}",
        # the trial trained one model; the whole pipeline with its params, from the workspace
        "rerun": f"dvc exp apply {experiment} && bash run.sh --from-workspace",
    }
    write_json(
        sweep.folder / "best.json",
        {
            "study": sweep.study_name,
            "model": sweep.model,
            "objective": sweep.params.tune.objective,
            "value": best.value,
            "trial": best.number + 1,
            "experiment": experiment,
            "params": best.params,
            "overrides": best.user_attrs["overrides"],  # every -S its `dvc exp run` had
            "commands": commands,
        },
    )
    return [
        "",
        f"Best: trial {best.number + 1} ({experiment}), {best.value:.4f}.",
        "",
        f"    {commands['apply']}    # its params and model into the workspace",
        f"    {commands['rerun']}    # and the whole pipeline with them",
        "",
    ]


def draw_plots(sweep: Sweep, study: Any, complete: int) -> list[str]:
    """Optuna's optimisation history (trials numbered from 1, as everywhere here), and with
    two complete trials or more its parallel coordinates and parameter importances; the
    summary's lines for them."""
    figures: dict[str, Any] = {"history.png": optuna_plots.plot_optimization_history}
    if complete >= 2:
        figures["parallel_coordinate.png"] = optuna_plots.plot_parallel_coordinate
        figures["importances.png"] = optuna_plots.plot_param_importances
    lines = []
    for file_name, plot in figures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = plot(study)
            except (ValueError, RuntimeError) as error:  # e.g. every value identical
                log.warning("%s: not drawn (%s)", file_name, error)
                continue
        if file_name == "history.png":
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x + 1:.0f}"))
        if file_name == "parallel_coordinate.png":
            readable_parallel_coordinates(axes, study)
        if file_name == "importances.png" and complete < TRUSTED_IMPORTANCE_TRIALS:
            note = (
                f"Parameter importances from {complete} complete trials say little: Optuna "
                f"estimates them from the trials' spread, which needs "
                f"{TRUSTED_IMPORTANCE_TRIALS} or more to separate a parameter from chance."
            )
            log.warning(note)
            lines += ["", note]
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        save_figure(figure, sweep.folder / file_name)
        lines.append(f"![{file_name}]({file_name})")
    return lines


def readable_parallel_coordinates(axes: Any, study: Any) -> None:
    """Optuna's parallel coordinates drew the worst trial in the colour map's white on a grey
    background and cut the axis names to 14 characters: every line here in a colour map
    without white (the best trial darkest), on white, and each axis with its whole name (Optuna
    orders the params by name), turned to fit."""
    best_first = (
        "viridis" if study.direction == optuna.study.StudyDirection.MINIMIZE else "viridis_r"
    )
    shades = colormaps[best_first](np.linspace(0.0, 0.85, 256))  # the palest tenth left out
    axes.set_facecolor("white")
    for collection in axes.collections:
        collection.set_cmap(ListedColormap(shades))
    names = sorted({name for trial in study.trials for name in trial.params})
    labels = axes.get_xticklabels()
    if len(labels) == len(names) + 1:
        axes.set_xticks(axes.get_xticks(), [labels[0].get_text(), *names])
    for label in axes.get_xticklabels():
        label.set_rotation(25)
        label.set_horizontalalignment("right")
