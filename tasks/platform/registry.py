"""The model registry: versions (found again by fingerprint, never half-registered), each tagged with
the identity of the data it was trained and tested on; guarded promotion to the `champion` alias,
only ever on a test set both models can be judged on; and every decision kept in the alias's
history, as tags of the registered model."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.platform.errors import UserError
from tasks.platform.tracking import TrackingUnavailableError, git_commit, quietly

log = logging.getLogger(__name__)


# Version tags naming the data a model saw: a champion is only ever compared on data both were judged on.
DATA_TAG_PREFIX = "data."


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool
    champion_version: str
    challenger_score: float | None
    champion_score: float | None
    reason: str = ""  # why, in one line: what the comparison was made on, or why none was made

    def as_dict(self) -> dict[str, object]:
        return {
            "registered_version": self.version,
            "promoted": self.promoted,
            "champion_version": self.champion_version,
            "challenger_score": self.challenger_score,
            "previous_champion_score": self.champion_score,
            "reason": self.reason,
        }


def data_tags(mlflow_client: MlflowClient, name: str, version: str) -> dict[str, str]:
    """The `data.*` identity tags of a registered version (empty for versions registered before they existed)."""
    tags = mlflow_client.get_model_version(name, version).tags
    return {key: value for key, value in tags.items() if key.startswith(DATA_TAG_PREFIX)}


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


def register_version(mlflow_client: MlflowClient, name: str, model_uri: str, description: str, fingerprint: str,
                     tags: dict[str, str] | None = None) -> str:
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
        for key, value in {**(tags or {}), "fingerprint": fingerprint}.items():
            mlflow_client.set_model_version_tag(name, version, key, value)
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
    basis: str = "",
) -> Promotion:
    """Move the alias to `version` only when it beats the reference scored on the same test data.

    The reference is the current champion's score, or whatever the caller must beat when there
    is no champion yet (None: nothing to beat). `basis` says which test data both were scored on.
    """
    current = champion_version(mlflow_client, name, alias)
    promoted = champion_score is None or challenger_score > champion_score
    reference = "nothing to beat" if champion_score is None else f"{metric} {challenger_score:.4f} vs {champion_score:.4f}"
    reason = f"{reference}{f' on {basis}' if basis else ''}"
    if promoted:
        mlflow_client.set_registered_model_alias(name, alias, version)
        if current != version:
            record_decision(mlflow_client, name, alias, version, current, True, reason, metric, challenger_score, champion_score)
        log.info("%s v%s is now @%s (%s)", name, version, alias, reason)
    else:
        if current != version:
            record_decision(mlflow_client, name, alias, version, current, False, reason, metric, challenger_score, champion_score)
        log.info("%s v%s stays a challenger (%s; champion: v%s)", name, version, reason, current)
    mlflow_client.set_model_version_tag(name, version, f"{metric}_on_test", f"{challenger_score:.6f}")
    return Promotion(version, promoted, version if promoted else str(current or "none"), challenger_score, champion_score, reason)


def keep_as_challenger(mlflow_client: MlflowClient, name: str, alias: str, version: str, reason: str) -> Promotion:
    """Register without promoting, when no fair comparison with the champion exists; say why, once."""
    current = champion_version(mlflow_client, name, alias)
    if current != version:
        record_decision(mlflow_client, name, alias, version, current, False, reason)
        mlflow_client.set_model_version_tag(name, version, "not_promoted", reason[:5000])
    log.warning("%s v%s registered, not promoted: %s", name, version, reason)
    return Promotion(version, False, str(current or "none"), None, None, reason)


class UnknownVersionError(UserError, LookupError):
    """`bookcovers promote` named a version the registry does not hold."""


def promote_by_hand(mlflow_client: MlflowClient, name: str, alias: str, version: str, reason: str) -> Promotion:
    """The user's explicit choice (`bookcovers promote`), e.g. to switch to a model trained on other data."""
    current = champion_version(mlflow_client, name, alias)
    try:
        mlflow_client.get_model_version(name, version)  # an unknown version fails here, before the alias moves
    except MlflowException:
        known = sorted((str(v.version) for v in _versions(mlflow_client, name)), key=int)
        raise UnknownVersionError(f"{name} has no version {version}; registered: {', '.join(known) or 'none'}") from None
    mlflow_client.set_registered_model_alias(name, alias, version)
    if current != version:
        record_decision(mlflow_client, name, alias, version, current, True, reason)
    return Promotion(version, True, version, None, None, reason)


def record_decision(mlflow_client: MlflowClient, name: str, alias: str, version: str, previous: str | None, promoted: bool,
                    reason: str, metric: str | None = None, score: float | None = None, previous_score: float | None = None) -> None:
    """Append a decision about `alias` (moved to `version`, or `version` kept out of it) and why, as a model tag.

    Aliases only point at the present; these tags keep the past (`<alias>_history.0001`, ...).
    """
    prefix = f"{alias}_history."
    count = sum(1 for key in mlflow_client.get_registered_model(name).tags if key.startswith(prefix))
    entry = {"version": version, "promoted": promoted, "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "reason": reason, "metric": metric, "score": None if score is None else round(score, 6),
             "previous_version": previous, "previous_score": None if previous_score is None else round(previous_score, 6)}
    mlflow_client.set_registered_model_tag(name, f"{prefix}{count + 1:04d}", json.dumps(entry)[:5000])


def alias_history(mlflow_client: MlflowClient, name: str, alias: str, promotions_only: bool = True) -> list[dict[str, object]]:
    """Who held `alias`, in order; with promotions_only=False also the versions kept out of it, and why."""
    prefix = f"{alias}_history."
    tags = mlflow_client.get_registered_model(name).tags
    entries = [json.loads(tags[key]) for key in sorted(tags) if key.startswith(prefix)]
    return [entry for entry in entries if entry.get("promoted", True) or not promotions_only]
