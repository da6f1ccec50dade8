"""check_params: check params.yaml, and the -S overrides about to be applied, before DVC runs.

    python -m stages.check_params [-S key=value ...]

DVC removes a stage's outputs before running it, and `dvc exp run -S` writes the overrides into
params.yaml before anything runs: a typo found inside a stage has already cost the workspace
copy of those outputs. Checking here loses nothing. Beyond the schema it builds each model's
architecture (unknown names, freezing groups the model does not have), loads local weights
files completely, and checks the batch size against the training set the data settings give.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
from pathlib import Path

from stages.common.config.overrides import with_overrides
from stages.common.config.params import Params
from stages.common.config.training import training_key
from stages.common.data.cifar10 import CLASSES
from stages.common.data.sources import survey_source
from stages.common.data.splitting import expected_split_sizes, source_train_counts, split_problem
from stages.common.plumbing.command import run_command
from stages.common.plumbing.errors import DataError, ParamsError

log = logging.getLogger("check_params")
SMALL_VALIDATION = 100  # fewer validation images than this: one is more than 1% of accuracy


def symlink_loop(folder: Path) -> Path | None:
    """A symbolic link under ``folder`` that resolves to itself through a loop, if any (DVC,
    hashing the source, would stop with 'Too many levels of symbolic links')."""
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            path = Path(parent, name)
            if path.is_symlink():
                try:
                    path.resolve(strict=True)
                except (RuntimeError, OSError) as error:
                    if isinstance(error, RuntimeError) or error.errno == errno.ELOOP:
                        return path
    return None


def check_source(params: Params) -> None:
    """The source is there (or a download makes it) and has the shape prepare reads, judged
    from its names: a source prepare would refuse fails here, before DVC deletes a single
    output (and before DVC hashes it: /dev/zero read for ten minutes)."""
    source = params.data.source
    downloaded = {Path(entry.path) for entry in params.downloads.values()}
    if Path(source).is_dir() and (loop := symlink_loop(Path(source))) is not None:
        raise ParamsError(f"data.source: '{loop}' is a symbolic link loop; remove or fix it")
    if not Path(source).exists():
        if Path(source) not in downloaded:
            where = "" if Path(source).is_absolute() else f" (in {Path.cwd()})"
            raise ParamsError(
                f"data.source: '{source}' does not exist{where} and no entry of `downloads` "
                "fetches it"
            )
        return
    try:
        survey = survey_source(source)
    except DataError as error:
        raise ParamsError(str(error)) from None
    classes = sorted(survey.train_counts)
    if params.data.classes == "cifar10" and classes and classes != sorted(CLASSES):
        raise ParamsError(
            f"data.source: '{source}' holds {len(classes)} classes ({', '.join(classes)}), not "
            "CIFAR-10's ten; set data.classes: any to use another class set"
        )


def check_model(params: Params, name: str) -> None:
    # imported here, after the cheap checks: timm's import takes seconds, a typo's error not
    from stages.common.models.factory import (
        check_arch,
        check_weights_file,
        create_architecture,
        input_size,
    )
    from stages.common.training.freezing import Freezer

    spec = params.models[name]
    key = f"models.{name}"
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ParamsError(f"{key}: model names may use letters, digits, '_' and '-' only")
    check_arch(spec.arch, f"{key}.arch")
    model = create_architecture(spec.arch, 10, input_size(spec), pretrained=False)
    Freezer(model, spec.freezing, f"{key}.freezing")
    check_weights_file(name, spec, 10)


def check_split(params: Params) -> None:
    """The train/validation split is possible and leaves at least one batch to train on."""
    data = params.data
    known = source_train_counts(data)  # from the source's files, or CIFAR-10's counts
    if known is not None and (problem := split_problem(*known[:2], data.val_ratio, known[2])):
        raise ParamsError(problem)
    sizes = expected_split_sizes(data)
    for name, spec in params.models.items():
        batch_size = params.training(name).batch_size
        if sizes is not None and batch_size > sizes[0]:
            raise ParamsError(
                f"{training_key(name, spec, 'batch_size')}: {batch_size} is larger than the "
                "training set "
                f"({sizes[0]} images with data.subset={data.subset}, "
                f"data.val_ratio={data.val_ratio})"
            )


def warn_small_validation(params: Params) -> None:
    """A validation split this small moves its accuracy in big steps, and the best epoch,
    early stopping and the pruner rest on it: said before the run, not found after it."""
    sizes = expected_split_sizes(params.data)
    if sizes is not None and sizes[1] < SMALL_VALIDATION:
        data = params.data
        log.warning(
            "the validation split holds %d images (data.subset=%s, data.val_ratio=%g): one "
            "image is %.1f%% of val accuracy, and the best epoch and early stopping rest on "
            "them; raise data.val_ratio or data.subset for a steadier choice",
            sizes[1],
            data.subset,
            data.val_ratio,
            100 / sizes[1],
        )


def check_searched_architectures(params: Params) -> None:
    """Every architecture a sweep may propose builds (the schema takes any name; a bad one
    failed every trial that drew it, each with a traceback)."""
    from stages.common.models.factory import check_arch

    for key, distribution in params.tune.space.items():
        parts = key.split(".")
        if distribution.type == "categorical" and parts[0] == "models" and parts[-1] == "arch":
            for choice in distribution.choices or []:
                check_arch(str(choice), f"tune.space.{key}")


def check(params: Params) -> None:
    check_source(params)
    check_split(params)
    for name in params.models:
        check_model(params, name)
    check_searched_architectures(params)
    warn_small_validation(params)
    count = f"{len(params.models)} model{'s' if len(params.models) != 1 else ''}"
    students = "".join(
        f"; {name} taught by {entry.teacher}" for name, entry in params.distill.items()
    )
    log.info("params.yaml is valid (%s: %s%s)", count, ", ".join(params.models), students)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-S", "--set-param", action="append", default=[], dest="overrides")
    parser.add_argument("--model", help="a model the run targets; it must exist")
    args = parser.parse_args()
    params = with_overrides(args.overrides).params
    if args.model:
        params.model(args.model)
    check(params)


if __name__ == "__main__":
    run_command(main)
