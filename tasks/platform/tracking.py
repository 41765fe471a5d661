"""MLflow plumbing shared by the stages: the tracking store, lineage tags and explicit runs.

Runs are addressed by id through `MlflowClient`, never through a process-global active run,
because Prefect may run tasks in other threads. Every run is tagged with what it came from
(git commit, the DVC-style md5 of its input files, the Prefect flow-run id) so a registered
model traces back to its exact data and code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.platform.errors import UserError
from tasks.platform.local_store import follow_project_folder

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tasks_package_dir() -> Path:
    """The `tasks` package folder, logged beside each model (code_paths) so it loads where the project is absent."""
    return Path(__file__).resolve().parents[1]


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def client() -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())


class TrackingUnavailableError(UserError, ConnectionError):
    """The MLflow tracking server cannot be reached, or went away while registering a model."""


def ensure_tracking_reachable(attempts: int = 3, timeout_seconds: float = 3.0) -> None:
    """Fail in seconds, before any work, when the tracking server is down.

    MLflow's own client retries an unreachable server with exponential backoff for minutes;
    a stage that trains for an hour and then cannot record the result is worse than one that
    refuses to start. Local (sqlite/file) stores need no server, only their artefact paths
    pointed at this project folder (tasks/platform/local_store.py).
    """
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        follow_project_folder(uri)  # a copied or moved project reads and writes its own artefacts
        return
    error: Exception | None = None
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_seconds) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError, ValueError) as failure:
            error = failure
        if attempt + 1 < attempts:
            time.sleep(2 ** attempt)
    raise TrackingUnavailableError(
        f"MLflow tracking server {uri} is unreachable after {attempts} tries ({error}); start it (`make ui`), "
        "point MLFLOW_TRACKING_URI at a running server, or unset it to use the local sqlite:///mlflow.db")


def file_md5(path: Path) -> str:
    """The md5 DVC records for a file, so an MLflow tag can be matched against dvc.lock."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_fingerprint(values: dict[str, object], files: list[Path]) -> str:
    """One digest of a stage's params and the exact bytes of its input files (and code).

    Two runs with the same fingerprint computed the same thing: a checkpoint may be resumed,
    a registered version reused instead of duplicated.
    """
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode("utf-8"))
    for path in files:
        digest.update(f"{Path(path).name}:{file_md5(Path(path)) if Path(path).is_file() else 'absent'}".encode("utf-8"))
    return digest.hexdigest()[:32]


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def prefect_flow_run_id() -> str:
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id or "none")
    except Exception:  # noqa: BLE001 - lineage must never fail a run
        return "none"


def lineage_tags(inputs: dict[str, Path], data_source: str | None = None) -> dict[str, str]:
    """What a run came from: code, Prefect run, the md5 of its input files and, given, the data it read."""
    tags = {"git_commit": git_commit(), "prefect_flow_run_id": prefect_flow_run_id()}
    if data_source:
        tags["data_source"] = data_source
    for name, path in inputs.items():
        if Path(path).is_file():
            tags[f"data_md5.{name}"] = file_md5(Path(path))
    return tags


def experiment_id(mlflow_client: MlflowClient, name: str) -> str:
    experiment = mlflow_client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else mlflow_client.create_experiment(name)


def _reopened_run(mlflow_client: MlflowClient, run_id: str | None) -> str | None:
    """The run a killed stage was logging to, reopened, when this tracking store still has it."""
    if not run_id:
        return None
    try:
        mlflow_client.get_run(run_id)
    except MlflowException:
        return None
    mlflow_client.update_run(run_id, status="RUNNING")
    mlflow_client.set_tag(run_id, "resumed_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    log.info("continuing MLflow run %s", run_id)
    return run_id


def experiment_id_or_none(name: str) -> str | None:
    try:
        experiment = client().get_experiment_by_name(name)
    except MlflowException:
        return None
    return experiment.experiment_id if experiment else None


@contextmanager
def tracked_run(
    experiment: str, run_name: str, tags: dict[str, str], parent_run_id: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[str]:
    """Start a run (or reopen `resume_run_id`), yield its id, end it FINISHED or FAILED."""
    mlflow_client = client()
    run_id = _reopened_run(mlflow_client, resume_run_id)
    if run_id is None:
        all_tags = dict(tags)
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run_id = mlflow_client.create_run(experiment_id(mlflow_client, experiment), run_name=run_name, tags=all_tags).info.run_id
    try:
        yield run_id
    except BaseException:
        with quietly("marking the run FAILED"):
            mlflow_client.set_terminated(run_id, "FAILED")
        raise
    mlflow_client.set_terminated(run_id, "FINISHED")


@contextmanager
def quietly(what: str) -> Iterator[None]:
    """For clean-up while another error is on its way up: that error is the one to report."""
    try:
        yield
    except Exception as error:  # noqa: BLE001
        log.warning("%s failed too: %s", what, error)


def log_stage_run(experiment: str, run_name: str, inputs: dict[str, Path], metrics: dict[str, float],
                  artifacts: list[Path], data_source: str | None = None) -> str:
    """One MLflow run for a stage that produces data rather than a model: its figures and reports."""
    mlflow_client = client()
    with tracked_run(experiment, run_name, lineage_tags(inputs, data_source)) as run_id:
        for key, value in metrics.items():
            mlflow_client.log_metric(run_id, key, float(value))
        for artifact in artifacts:
            if Path(artifact).is_file():
                mlflow_client.log_artifact(run_id, str(artifact))
    return run_id
