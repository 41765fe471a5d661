"""MLflow plumbing shared by the stages: lineage tags, explicit runs, and guarded promotion.

Runs are addressed by id through `MlflowClient`, never through a process-global active run,
because Prefect may run tasks in other threads. Every run is tagged with what it came from
(git commit, the DVC-style md5 of its input files, the Prefect flow-run id) so a registered
model traces back to its exact data and code.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def client() -> MlflowClient:
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    return MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())


def file_md5(path: Path) -> str:
    """The md5 DVC records for a file, so an MLflow tag can be matched against dvc.lock."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def lineage_tags(inputs: dict[str, Path]) -> dict[str, str]:
    tags = {"git_commit": git_commit(), "prefect_flow_run_id": prefect_flow_run_id()}
    for name, path in inputs.items():
        if Path(path).is_file():
            tags[f"data_md5.{name}"] = file_md5(Path(path))
    return tags


def experiment_id(mlflow_client: MlflowClient, name: str) -> str:
    experiment = mlflow_client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else mlflow_client.create_experiment(name)


@contextmanager
def tracked_run(
    experiment: str, run_name: str, tags: dict[str, str], parent_run_id: str | None = None
) -> Iterator[str]:
    """Start a run, yield its id, end it FINISHED or FAILED. Nested when a parent is given."""
    mlflow_client = client()
    all_tags = dict(tags)
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = mlflow_client.create_run(experiment_id(mlflow_client, experiment), run_name=run_name, tags=all_tags)
    try:
        yield run.info.run_id
    except BaseException:
        mlflow_client.set_terminated(run.info.run_id, "FAILED")
        raise
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool
    champion_version: str
    challenger_score: float
    champion_score: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "registered_version": self.version,
            "promoted": self.promoted,
            "champion_version": self.champion_version,
            "challenger_score": self.challenger_score,
            "previous_champion_score": self.champion_score,
        }


def champion_version(mlflow_client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(mlflow_client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def register_version(mlflow_client: MlflowClient, name: str, model_uri: str, description: str) -> str:
    """A new registry version of `model_uri`; the alias is left for `promote_if_better` to decide."""
    version = mlflow.register_model(model_uri, name)
    mlflow_client.update_model_version(name, version.version, description=description)
    return str(version.version)


def promote_if_better(
    mlflow_client: MlflowClient,
    name: str,
    alias: str,
    version: str,
    challenger_score: float,
    champion_score: float | None,
    metric: str,
) -> Promotion:
    """Move the alias to `version` only when it beats the reference scored on the same test data.

    The reference is the current champion's score, or whatever the caller must beat when there
    is no champion yet (None: nothing to beat).
    """
    current = champion_version(mlflow_client, name, alias)
    promoted = champion_score is None or challenger_score > champion_score
    if promoted:
        mlflow_client.set_registered_model_alias(name, alias, version)
        log.info("%s v%s is now @%s (%s %.4f vs %s)", name, version, alias, metric, challenger_score, champion_score)
    else:
        log.info("%s v%s stays a challenger: %s %.4f <= %.4f (champion: v%s)", name, version, metric, challenger_score, champion_score, current)
    mlflow_client.set_model_version_tag(name, version, f"{metric}_on_test", f"{challenger_score:.6f}")
    return Promotion(version, promoted, version if promoted else str(current or "none"), challenger_score, champion_score)


def log_stage_run(experiment: str, run_name: str, inputs: dict[str, Path], metrics: dict[str, float],
                  artifacts: list[Path]) -> str:
    """One MLflow run for a stage that produces data rather than a model: its figures and reports."""
    mlflow_client = client()
    with tracked_run(experiment, run_name, lineage_tags(inputs)) as run_id:
        for key, value in metrics.items():
            mlflow_client.log_metric(run_id, key, float(value))
        for artifact in artifacts:
            if Path(artifact).is_file():
                mlflow_client.log_artifact(run_id, str(artifact))
    return run_id
