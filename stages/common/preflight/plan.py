"""Which stages a run will execute and which DVC will skip, before it starts, without touching
the workspace.

DVC decides this when it runs; `dvc repro --dry` only prints the commands of the stages changed
now (a stage below a changed one shows as unchanged, though it will run once its inputs are
rewritten), and `dvc exp run --dry` runs in a temporary copy without the workspace's data.
Here DVC's own pipeline and status code run on the workspace with params.yaml replaced by the
text the run will write (the `-S` overrides applied), read through a file system that serves
that text instead of the file: a stage runs when it changed or a stage it depends on runs or
is restored, unless DVC's run-cache holds its outputs for exactly these inputs (then DVC
restores them instead: "restore"). Below a restored stage the plan says "run", though DVC may
find those stages in its run-cache too: the plan can overstate what runs, never understate it.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from stages.common.plumbing.errors import StageError
from stages.common.plumbing.logs import quieted
from stages.common.plumbing.stage_params import PARAMS_FILE

Action = Literal["run", "cached", "restore"]  # restore: DVC's run-cache has its outputs


@dataclass(frozen=True)
class PlannedStage:
    name: str  # as DVC addresses it: prepare, train@resnet, ...
    action: Action
    reason: str = ""  # why it runs: changed, never run, after <stage>


def _overlay_filesystem(params_text: str):
    from dvc.fs import LocalFileSystem

    class ParamsOverlay(LocalFileSystem):
        """The local file system, but params.yaml reads as the run's text."""

        def __init__(self) -> None:
            super().__init__()
            self.params_path = os.path.abspath(PARAMS_FILE)

        def open(self, path: Any, mode: str = "r", encoding: Any = None, **kwargs: Any) -> IO:
            if os.path.abspath(path) == self.params_path and set(mode) <= set("rbt"):
                if "b" in mode:
                    return io.BytesIO(params_text.encode())
                return io.StringIO(params_text)
            return super().open(path, mode, encoding=encoding, **kwargs)

    return ParamsOverlay()


def plan_run(params_text: str, targets: list[str], root: Path | str = ".") -> list[PlannedStage]:
    """The stages ``dvc repro``/``dvc exp run`` of ``targets`` (all when empty) will meet, in
    order, with what each will do, for params.yaml as ``params_text``."""
    from dvc.exceptions import DvcException
    from dvc.lock import LockError
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro
    from dvc.stage.cache import RunCacheNotFoundError

    with (
        quieted("dvc", logging.ERROR),
        Repo(str(root), fs=_overlay_filesystem(params_text)) as repo,
    ):
        try:
            repo.lock.lock()
        except LockError:
            raise StageError(
                "another DVC command is running in this clone (.dvc/tmp/lock is held); "
                "wait for it to finish"
            ) from None
        try:
            graph = get_active_graph(repo.index.graph)
            steps = plan_repro(graph, collect_stages(repo, targets or ["dvc.yaml"]))
            planned: dict[Any, PlannedStage] = {}
            for stage in steps:
                # a stage whose inputs an earlier stage rewrites runs too: whether DVC could
                # restore it instead depends on outputs not made yet (not looked into here)
                rewritten = [u for u in graph.successors(stage) if planned[u].action != "cached"]
                if rewritten:
                    reason = f"after {rewritten[0].addressing}"
                    planned[stage] = PlannedStage(stage.addressing, "run", reason)
                elif not stage.changed():
                    planned[stage] = PlannedStage(stage.addressing, "cached")
                else:
                    never_run = not any(out.hash_info for out in stage.outs)
                    reason = "never run" if never_run else "changed"
                    try:
                        forget_outputs(stage)
                        repo.stage_cache.restore(stage, dry=True)
                        planned[stage] = PlannedStage(stage.addressing, "restore")
                    except (RunCacheNotFoundError, DvcException, OSError):
                        planned[stage] = PlannedStage(stage.addressing, "run", reason)
            return [planned[stage] for stage in steps]
        finally:
            repo.lock.unlock()


def forget_outputs(stage: Any) -> None:
    """Make ``stage`` (DVC's in-memory copy; nothing is written) ask the run-cache about its
    inputs as they are now. Its deps take their current hashes; its outputs lose dvc.lock's
    record, which restore() would otherwise take for a run-cache entry of these inputs."""
    from dvc_data.hashfile.hash_info import HashInfo

    stage.save_deps()
    for out in stage.outs:
        out.hash_info = HashInfo()
