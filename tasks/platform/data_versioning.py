"""Keep DVC's record in step when the pipeline runs as a Prefect flow instead of `dvc repro`.

`dvc commit --force` hashes every stage's deps and outs as they are now and writes dvc.lock,
so after `python -m flows.pipeline` a `dvc status` is clean and `dvc repro` has nothing to do.
It is skipped when the run used command-line overrides: dvc.lock would then claim that the
outputs came from params.yaml's values, which they did not.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.platform.reliability import PipelineBusyError

log = logging.getLogger(__name__)


def in_dvc_repo(root: Path = Path(".")) -> bool:
    return (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()


def dvc_executable() -> str | None:
    return shutil.which("dvc")


@task(name="dvc-commit", cache_policy=NO_CACHE)
def record_outputs_in_dvc(overrides: list[str], params_file: str = "params.yaml", enabled: bool = True,
                          data_root_missing: bool = False) -> str:
    if not enabled:
        return "skipped: runtime.dvc_commit_after_pipeline is false"
    if data_root_missing:
        log.warning("not recording outputs in dvc.lock: data.root is absent, so the run read the fallback data; "
                    "set data.root to your data folder (or to data/raw/generated) to version the run with DVC")
        return "skipped: data.root absent, fallback data used"
    if Path(params_file).resolve() != Path("params.yaml").resolve():
        log.warning("not recording outputs in dvc.lock: the run read %s, DVC reads params.yaml", params_file)
        return "skipped: params file is not params.yaml"
    if overrides:
        log.warning("not recording outputs in dvc.lock: the run overrode params (%s); `dvc repro` will rerun", overrides)
        return "skipped: params overridden"
    executable = dvc_executable()
    if not in_dvc_repo() or executable is None:
        return "skipped: not a DVC repository"
    result = subprocess.run([executable, "commit", "--force"], capture_output=True, text=True)
    if result.returncode != 0:
        message = result.stderr.strip() or result.stdout.strip()
        if "lock" in message.lower():
            raise PipelineBusyError(f"dvc commit could not record the outputs in dvc.lock: another DVC command holds the "
                                    f"repository lock ({message.splitlines()[-1]}); run `dvc commit --force` once it is done")
        raise RuntimeError(f"dvc commit failed: {message}")
    log.info("outputs recorded in dvc.lock")
    return "committed"
