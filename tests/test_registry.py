"""Model safety in the registry: a worse challenger never takes the alias, the alias keeps its
history, reruns add no versions, and a registration cut off halfway leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from tasks.platform.registry import REGISTRATION_TAG, alias_history, champion_version, promote_if_better, register_version
from tasks.platform.tracking import TrackingUnavailableError, client

NAME, ALIAS = "some-model", "champion"


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ARG002
        return model_input


@pytest.fixture()
def model_uri(project_dir: Path) -> str:
    client()  # points mlflow at this test's own database
    with mlflow.start_run():
        return mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["mlflow"]).model_uri


def versions(mlflow_client) -> list[str]:
    return sorted(str(v.version) for v in mlflow_client.search_model_versions(f"name='{NAME}'"))


def test_worse_challengers_are_registered_but_never_champion_and_history_is_kept(model_uri: str) -> None:
    mlflow_client = client()
    first = register_version(mlflow_client, NAME, model_uri, "first", "fp-1")
    assert promote_if_better(mlflow_client, NAME, ALIAS, first, 0.80, None, "accuracy").promoted
    worse = register_version(mlflow_client, NAME, model_uri, "worse", "fp-2")
    outcome = promote_if_better(mlflow_client, NAME, ALIAS, worse, 0.70, 0.80, "accuracy")
    assert not outcome.promoted and champion_version(mlflow_client, NAME, ALIAS) == first
    tie = register_version(mlflow_client, NAME, model_uri, "tie", "fp-3")
    assert not promote_if_better(mlflow_client, NAME, ALIAS, tie, 0.80, 0.80, "accuracy").promoted
    better = register_version(mlflow_client, NAME, model_uri, "better", "fp-4")
    assert promote_if_better(mlflow_client, NAME, ALIAS, better, 0.90, 0.80, "accuracy").promoted
    assert champion_version(mlflow_client, NAME, ALIAS) == better == "4"
    assert versions(mlflow_client) == ["1", "2", "3", "4"]
    history = alias_history(mlflow_client, NAME, ALIAS)
    assert [(h["version"], h["previous_version"], h["score"], h["previous_score"]) for h in history] == [
        ("1", None, 0.8, None), ("4", "1", 0.9, 0.8)]
    assert all(h["metric"] == "accuracy" and h["since"] for h in history)
    assert mlflow_client.get_model_version(NAME, worse).description == "worse"


def test_the_same_model_registered_again_is_the_same_version(model_uri: str) -> None:
    mlflow_client = client()
    first = register_version(mlflow_client, NAME, model_uri, "first", "fp-1")
    promote_if_better(mlflow_client, NAME, ALIAS, first, 0.8, None, "accuracy")
    again = register_version(mlflow_client, NAME, model_uri, "first again", "fp-1")
    promote_if_better(mlflow_client, NAME, ALIAS, again, 0.8, None, "accuracy")  # re-evaluating the champion itself
    assert again == first and versions(mlflow_client) == ["1"]
    assert len(alias_history(mlflow_client, NAME, ALIAS)) == 1


def test_a_registration_cut_off_halfway_leaves_no_version_and_moves_no_alias(model_uri: str, monkeypatch) -> None:
    mlflow_client = client()
    champion = register_version(mlflow_client, NAME, model_uri, "champion", "fp-1")
    promote_if_better(mlflow_client, NAME, ALIAS, champion, 0.8, None, "accuracy")

    def server_gone(*args, **kwargs):
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(mlflow_client, "update_model_version", server_gone)
    with pytest.raises(TrackingUnavailableError, match="no alias moved"):
        register_version(mlflow_client, NAME, model_uri, "cut off", "fp-2")
    assert versions(mlflow_client) == ["1"]
    assert champion_version(mlflow_client, NAME, ALIAS) == "1"


def test_a_version_left_pending_by_a_dead_server_is_removed_by_the_next_registration(model_uri: str) -> None:
    mlflow_client = client()
    legacy = mlflow.register_model(model_uri, NAME)  # registered before the tag existed: left alone
    pending = mlflow.register_model(model_uri, NAME, tags={REGISTRATION_TAG: "pending"})
    fresh = register_version(mlflow_client, NAME, model_uri, "fresh", "fp-1")
    assert versions(mlflow_client) == sorted([str(legacy.version), fresh])
    assert str(pending.version) not in versions(mlflow_client)
    assert mlflow_client.get_model_version(NAME, fresh).tags[REGISTRATION_TAG] == "complete"


def test_the_cover_index_uses_the_champion_else_the_newest_version_and_says_which(model_uri: str) -> None:
    from tasks.platform.errors import ModelLoadError
    from tasks.platform.settings import MlflowSettings
    from tasks.search.index import index_model

    registry, mlflow_client = MlflowSettings(clip_model_name=NAME, champion_alias=ALIAS), client()
    with pytest.raises(ModelLoadError, match="no version of some-model is registered"):
        index_model(mlflow_client, registry)
    first = register_version(mlflow_client, NAME, model_uri, "first", "fp-1")
    second = register_version(mlflow_client, NAME, model_uri, "second", "fp-2")
    assert index_model(mlflow_client, registry) == {"model": NAME, "version": second, "uri": f"models:/{NAME}/{second}", "alias": None}
    assert promote_if_better(mlflow_client, NAME, ALIAS, first, 0.8, None, "accuracy").promoted
    assert index_model(mlflow_client, registry) == {"model": NAME, "version": first, "uri": f"models:/{NAME}@{ALIAS}", "alias": ALIAS}
