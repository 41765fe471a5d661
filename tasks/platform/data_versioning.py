"""Keep DVC's record in step when the pipeline runs as a Prefect flow instead of `dvc repro`, and
let the flow skip what DVC knows is unchanged.

`dvc commit --force` hashes every stage's deps and outs as they are now and writes dvc.lock,
so after `python -m flows.pipeline` a `dvc status` is clean and `dvc repro` has nothing to do.
The next pipeline run asks DVC, stage by stage, whether that stage's deps (data and code), params
and outs still match dvc.lock, and skips it when they do: the same judgement as `dvc repro`, from
DVC's own hashes. Neither happens when the run used command-line overrides, another params file
or the fallback data: dvc.lock would then claim that the outputs came from params.yaml's values
and the data folder, which they did not.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.platform.reliability import PipelineBusyError

log = logging.getLogger(__name__)


def in_dvc_repo(root: Path = Path(".")) -> bool:
    return (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()


def dvc_executable() -> str | None:
    """This environment's own `dvc` first: a run started from the Prefect UI may have a PATH without the venv."""
    beside_python = Path(sys.executable).parent / "dvc"
    return str(beside_python) if beside_python.is_file() else shutil.which("dvc")


def dvc_record_blocker(overrides: list[str], params_file: str, enabled: bool, data_root_missing: bool) -> str | None:
    """Why dvc.lock cannot speak for this run (then it is neither written nor trusted to skip a stage), or None."""
    if not enabled:
        return "runtime.dvc_commit_after_pipeline is false"
    if data_root_missing:
        return "data.root absent, fallback data used"
    if Path(params_file).resolve() != Path("params.yaml").resolve():
        return "params file is not params.yaml"
    if overrides:
        return "params overridden"
    if not in_dvc_repo():
        return "not a DVC repository"
    return None


class UnchangedStages:
    """Asks DVC whether a stage is up to date with dvc.lock, as `dvc status <stage>` does (in-process)."""

    def __init__(self, blocker: str | None) -> None:
        self.blocker = blocker

    def unchanged(self, stage: str) -> bool:
        if self.blocker is not None or not Path("dvc.lock").is_file():
            return False
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        try:
            with Repo(".") as repo:
                changes = repo.status(targets=[stage])
        except DvcException as error:  # a stage DVC cannot judge runs: a needless rerun beats a wrong skip
            log.info("dvc cannot say whether %s changed (%s); running it", stage, error)
            return False
        if not changes:
            log.info("%s: inputs, params and code as recorded in dvc.lock; unchanged, skipped", stage)
        return not changes


@task(name="dvc-commit", cache_policy=NO_CACHE)
def record_outputs_in_dvc(overrides: list[str], params_file: str = "params.yaml", enabled: bool = True,
                          data_root_missing: bool = False) -> str:
    blocker = dvc_record_blocker(overrides, params_file, enabled, data_root_missing)
    executable = dvc_executable()
    if blocker is None and executable is None:
        blocker = "no dvc executable beside this Python or on PATH"
    if blocker is not None:
        if blocker != "not a DVC repository":  # the one case that is no news: a project used without DVC
            log.warning("not recording outputs in dvc.lock: %s; `dvc repro` will rerun the stages", blocker)
        return f"skipped: {blocker}"
    result = subprocess.run([executable, "commit", "--force"], capture_output=True, text=True)
    if result.returncode != 0:
        message = result.stderr.strip() or result.stdout.strip()
        if "lock" in message.lower():
            raise PipelineBusyError(f"dvc commit could not record the outputs in dvc.lock: another DVC command holds the "
                                    f"repository lock ({message.splitlines()[-1]}); run `dvc commit --force` once it is done")
        raise RuntimeError(f"dvc commit failed: {message}")
    log.info("outputs recorded in dvc.lock")
    return "committed"
