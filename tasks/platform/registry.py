"""The model registry: versions (found again by fingerprint, never half-registered), guarded
promotion to the `champion` alias, and the alias's history kept as tags of the registered model."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.platform.tracking import TrackingUnavailableError, git_commit, quietly

log = logging.getLogger(__name__)


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


def version_description(what: str, data: str, metrics: str, params: dict[str, object]) -> str:
    """The text the registry shows for a version: what it is, from which data, how good, made how."""
    return (f"{what}\n\nData: {data}\n\nMetrics: {metrics}\n\nParams: "
            + json.dumps(params, sort_keys=True, separators=(", ", ": "))[:3000]
            + f"\n\nCode: git {git_commit()}")


# "pending" from the moment a version exists, "complete" as its last write: a pending version
# was cut off halfway and is removed. (Versions from before this tag existed carry neither.)
REGISTRATION_TAG = "registration"


def _versions(mlflow_client: MlflowClient, name: str) -> list:
    try:
        return list(mlflow_client.search_model_versions(f"name='{name}'"))
    except MlflowException:
        return []


def _remove_incomplete_versions(mlflow_client: MlflowClient, name: str) -> None:
    for version in _versions(mlflow_client, name):
        if version.tags.get(REGISTRATION_TAG) == "pending" and not getattr(version, "aliases", []):
            log.warning("removing %s v%s: an earlier registration was cut off before it completed", name, version.version)
            mlflow_client.delete_model_version(name, version.version)


def register_version(mlflow_client: MlflowClient, name: str, model_uri: str, description: str, fingerprint: str) -> str:
    """The registry version of this model: an existing one with the same fingerprint, else a new one.

    The alias is left for `promote_if_better`. A version is usable only once its last tag is
    written; one cut off before that (server gone, process killed) is deleted here, or on the
    next registration when the server itself was what failed.
    """
    _remove_incomplete_versions(mlflow_client, name)
    for existing in _versions(mlflow_client, name):
        if existing.tags.get("fingerprint") == fingerprint:
            log.info("%s v%s already holds this model (fingerprint %s); no new version", name, existing.version, fingerprint)
            return str(existing.version)
    version = str(mlflow.register_model(model_uri, name, tags={REGISTRATION_TAG: "pending"}).version)
    try:
        mlflow_client.update_model_version(name, version, description=description)
        mlflow_client.set_model_version_tag(name, version, "fingerprint", fingerprint)
        mlflow_client.set_model_version_tag(name, version, REGISTRATION_TAG, "complete")
    except Exception as error:
        with quietly(f"removing the incomplete {name} v{version}"):
            mlflow_client.delete_model_version(name, version)
        raise TrackingUnavailableError(f"registering {name} v{version} failed ({error}); the incomplete version is "
                                       "removed now or on the next run, and no alias moved. Rerun the stage") from error
    return version


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
        if current != version:
            record_alias_change(mlflow_client, name, alias, version, current, metric, challenger_score, champion_score)
        log.info("%s v%s is now @%s (%s %.4f vs %s)", name, version, alias, metric, challenger_score, champion_score)
    else:
        log.info("%s v%s stays a challenger: %s %.4f <= %.4f (champion: v%s)", name, version, metric, challenger_score, champion_score, current)
    mlflow_client.set_model_version_tag(name, version, f"{metric}_on_test", f"{challenger_score:.6f}")
    return Promotion(version, promoted, version if promoted else str(current or "none"), challenger_score, champion_score)


def record_alias_change(mlflow_client: MlflowClient, name: str, alias: str, version: str, previous: str | None,
                        metric: str, score: float, previous_score: float | None) -> None:
    """Append who holds `alias` from now on, and why, as a tag of the registered model.

    Aliases only point at the present; these tags keep the past (`<alias>_history.0001`, ...).
    """
    prefix = f"{alias}_history."
    count = sum(1 for key in mlflow_client.get_registered_model(name).tags if key.startswith(prefix))
    entry = {"version": version, "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "metric": metric,
             "score": round(score, 6), "previous_version": previous,
             "previous_score": None if previous_score is None else round(previous_score, 6)}
    mlflow_client.set_registered_model_tag(name, f"{prefix}{count + 1:04d}", json.dumps(entry))


def alias_history(mlflow_client: MlflowClient, name: str, alias: str) -> list[dict[str, object]]:
    prefix = f"{alias}_history."
    tags = mlflow_client.get_registered_model(name).tags
    return [json.loads(tags[key]) for key in sorted(tags) if key.startswith(prefix)]
