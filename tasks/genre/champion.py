"""Whether a newly trained classifier may replace the champion: only on a test set both can be
judged on, never on the challenger's own split when the data changed.

Every registered version records what it learned from and was tested on (`data.*` tags): the data
source, the clean listing's md5, a digest of its test split (normalised titles + genres) and of
its label set; its test split itself is an artefact of its run. Then:

- same test split as the champion: both are scored on it (the ordinary case: a rerun, new params);
- other data, same label set, the champion's test split still readable: both are scored on the
  champion's test books that the challenger never trained on;
- otherwise (other label set, no recorded identity, the split unreadable, or too few books left):
  no comparison is fair, so the challenger is registered, not promoted, and the alias history
  says why. `bookcovers promote classifier VERSION` is the user's way to switch data sets.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.genre.selection import label_scores
from tasks.inputs.readers import normalized_text
from tasks.platform.errors import ModelLoadError
from tasks.platform.outputs import staged_folder, write_json
from tasks.platform.registry import (
    DATA_TAG_PREFIX,
    Promotion,
    champion_version,
    data_tags,
    keep_as_challenger,
    promote_by_hand,
    promote_if_better,
)
from tasks.platform.settings import MlflowSettings

log = logging.getLogger(__name__)

TEST_SPLIT_ARTIFACT = "data/test_split.parquet"
# Fewer unseen champion test books than this and a comparison would be noise.
MIN_SHARED_TEST_BOOKS = 50


def digest(values: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(values)).encode("utf-8")).hexdigest()[:16]


def split_digest(test: pd.DataFrame) -> str:
    """Which books, with which genres, a test split holds: equal digests mean the same test set."""
    return digest([f"{key}\t{genre}" for key, genre in zip(normalized_text(test["title"]), test["genre"])])


def identity_tags(data_source: str, listing_md5: str, test: pd.DataFrame, classes: list[str]) -> dict[str, str]:
    return {f"{DATA_TAG_PREFIX}source": data_source, f"{DATA_TAG_PREFIX}listing_md5": listing_md5,
            f"{DATA_TAG_PREFIX}test_split": split_digest(test), f"{DATA_TAG_PREFIX}test_books": str(len(test)),
            f"{DATA_TAG_PREFIX}label_set": digest(classes)}


def log_test_split(mlflow_client: MlflowClient, run_id: str, test: pd.DataFrame) -> None:
    """The books this model was tested on, so a later challenger trained on other data can be judged on them."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / Path(TEST_SPLIT_ARTIFACT).name
        test[["title", "author", "genre"]].to_parquet(path, index=False)
        mlflow_client.log_artifact(run_id, str(path), str(Path(TEST_SPLIT_ARTIFACT).parent))


def _champion_model(uri: str):  # noqa: ANN202  a pyfunc model
    """The current champion, which exists: failing to load it is an error, never 'no champion'."""
    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as error:  # noqa: BLE001  any failure (missing files, unpicklable code) means "cannot load"
        raise ModelLoadError(f"the current champion {uri} cannot be loaded ({error}); "
                             "restore its artifacts or remove the alias before training a challenger") from error


def _score(predict: Callable[[pd.DataFrame], pd.DataFrame], books: pd.DataFrame, metric: str) -> float:
    predicted = predict(books[["title", "author"]])["genre"].to_numpy()
    return label_scores(books["genre"].to_numpy(), predicted)[metric]


def champion_test_split(mlflow_client: MlflowClient, name: str, version: str) -> pd.DataFrame | None:
    run_id = mlflow_client.get_model_version(name, version).run_id
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TEST_SPLIT_ARTIFACT, dst_path=folder)
            return pd.read_parquet(path)
    except (MlflowException, OSError) as error:
        log.warning("the test split of %s v%s cannot be read (%s)", name, version, error)
        return None


def judge(mlflow_client: MlflowClient, registry: MlflowSettings, metric: str, version: str,
          challenger: Callable[[pd.DataFrame], pd.DataFrame], tags: dict[str, str], test: pd.DataFrame, challenger_score: float,
          train_titles: set[str]) -> Promotion:
    """Promote `version` (`challenger` predicts with it) if it beats the champion on data both can be judged on."""
    name, alias = registry.classifier_model_name, registry.champion_alias
    current = champion_version(mlflow_client, name, alias)
    if current is None or current == version:
        return promote_if_better(mlflow_client, name, alias, version, challenger_score, None if current is None else challenger_score,
                                 metric, "its own test split (no other champion)")
    champion_tags = data_tags(mlflow_client, name, current)
    uri = f"models:/{name}@{alias}"
    if not champion_tags:
        return keep_as_challenger(mlflow_client, name, alias, version,
                                  f"champion v{current} records no data identity (registered before they were recorded), so no "
                                  f"comparison is known to be fair; `bookcovers promote classifier {version}` switches by hand")
    key = f"{DATA_TAG_PREFIX}test_split"
    if champion_tags.get(key) == tags[key]:
        return promote_if_better(mlflow_client, name, alias, version, challenger_score, _score(_champion_model(uri).predict, test, metric),
                                 metric, f"the same test split as v{current} ({len(test)} books)")
    switch = f"`bookcovers promote classifier {version}` switches by hand"
    before, after = champion_tags.get(f"{DATA_TAG_PREFIX}source", "?"), tags[f"{DATA_TAG_PREFIX}source"]
    if champion_tags.get(f"{DATA_TAG_PREFIX}label_set") != tags[f"{DATA_TAG_PREFIX}label_set"]:
        return keep_as_challenger(mlflow_client, name, alias, version,
                                  f"trained on other data ({after}) with another label set than champion v{current} ({before}): "
                                  f"no common test set; {switch}")
    champion_test = champion_test_split(mlflow_client, name, current)
    if champion_test is None:
        return keep_as_challenger(mlflow_client, name, alias, version,
                                  f"trained on other data ({after}) than champion v{current} ({before}), whose test split can no "
                                  f"longer be read; {switch}")
    unseen = champion_test[~normalized_text(champion_test["title"]).isin(train_titles)]
    if len(unseen) < MIN_SHARED_TEST_BOOKS:
        return keep_as_challenger(mlflow_client, name, alias, version,
                                  f"trained on other data ({after}) than champion v{current} ({before}), and only {len(unseen)} of "
                                  f"its {len(champion_test)} test books are unseen by this model; {switch}")
    return promote_if_better(
        mlflow_client, name, alias, version, _score(challenger, unseen, metric), _score(_champion_model(uri).predict, unseen, metric),
        metric, f"champion v{current}'s test split ({len(unseen)} books neither model trained on), because this model "
                f"was trained on other data ({after}; champion: {before})")


def export_champion(mlflow_client: MlflowClient, registry: MlflowSettings, metric: str, target: Path) -> None:
    """A local copy of the champion, so DVC versions what the labeling stage will use.

    Only what identifies the champion goes in champion.json: a challenger that lost must not
    change this DVC output.
    """
    name, alias = registry.classifier_model_name, registry.champion_alias
    version = champion_version(mlflow_client, name, alias)
    score = mlflow_client.get_model_version(name, version).tags.get(f"{metric}_on_test")
    record = {"name": name, "alias": alias, "version": version, f"{metric}_on_test": None if score is None else float(score)}
    with staged_folder(target) as staging:
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}@{alias}", dst_path=str(staging / "model"))
        write_json(staging / "champion.json", record)


def promote_classifier(mlflow_client: MlflowClient, registry: MlflowSettings, metric: str, version: str, target: Path) -> Promotion:
    """Make `version` the champion because the user says so, and refresh the local copy the labeling stage reads."""
    promotion = promote_by_hand(mlflow_client, registry.classifier_model_name, registry.champion_alias, version,
                                "promoted by hand (bookcovers promote)")
    export_champion(mlflow_client, registry, metric, target)
    return promotion
