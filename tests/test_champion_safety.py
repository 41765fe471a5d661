"""A champion is only ever replaced by a model judged on the same data: a typo in data.root stops the
run, a classifier or CLIP trained on another data set is registered but not promoted (and the alias
history says why), and the user can still switch data sets by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import CATEGORY_MAPPING, PROJECT_ROOT, SHARED_DATA, TINY_OVERRIDES

from tasks.genre.champion import TEST_SPLIT_ARTIFACT, split_digest
from tasks.platform.registry import alias_history, champion_version, register_version
from tasks.platform.settings import DEFAULT_DATA_ROOT, EMBEDDED, DataSettings, SettingsError, load_settings
from tasks.platform.tracking import client

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}


# ------------------------------------------------------------------ data.root


def test_only_the_default_data_root_falls_back_to_the_embedded_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # ../shared/data does not exist from here
    (tmp_path / "mine").mkdir()
    assert not DEFAULT_DATA_ROOT.exists()
    default = DataSettings()
    assert default.source_root() == Path("data/raw/generated") and default.source_label() == EMBEDDED
    assert DataSettings(root=Path("data/raw/generated")).source_label() == EMBEDDED  # before generate wrote it
    assert DataSettings(root=Path("mine")).source_label() == str((tmp_path / "mine").resolve())
    with pytest.raises(SettingsError, match=r"data.root /nonexistent does not exist"):
        DataSettings(root=Path("/nonexistent")).source_root()


def _pipeline_with(arguments: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "flows.pipeline", *arguments], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    return result, time.perf_counter() - started


@pytest.mark.parametrize("how", ["override", "params file"])
def test_a_data_root_that_does_not_exist_stops_the_run_at_once(tmp_path: Path, how: str) -> None:
    if how == "override":
        arguments = ["data.root=/nonexistent"]
    else:
        (tmp_path / "mine.yaml").write_text("data:\n  root: /nonexistent\n")
        arguments = ["--params", str(tmp_path / "mine.yaml")]
    result, seconds = _pipeline_with(arguments, tmp_path)
    print(f"{how}: exit {result.returncode} after {seconds:.1f} s")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: data.root /nonexistent does not exist"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "data").exists()  # no stage ran, no registry written


# ------------------------------------------------------------------ the classifier


def _small_classifier(project: Path, data_root: Path) -> list[str]:
    return [f"data.root={data_root}", "classifier.candidates=[naive_bayes, linear_svm]", "classifier.ensemble=false",
            "classifier.cv_folds=3", "classifier.search_budget_seconds=0", "classifier.n_jobs=1", "engine.kind=none",
            f"paths.metrics_dir={project / 'metrics'}", f"paths.plots_dir={project / 'plots'}"]


def _train_on(listing: pd.DataFrame, overrides: list[str], project: Path) -> dict:
    from tasks.genre.training import train_and_select
    from tasks.inputs.validation import validate_listing

    settings = load_settings(project / "params.yaml", overrides)
    settings.paths.clean_listing.parent.mkdir(parents=True, exist_ok=True)
    validate_listing(listing, settings.validate_).kept.to_parquet(settings.paths.clean_listing, index=False)
    return train_and_select.fn(settings)


def _champion_score_on(test: pd.DataFrame) -> float:
    from sklearn.metrics import balanced_accuracy_score

    predicted = mlflow.pyfunc.load_model("models:/book-genre-classifier@champion").predict(test[["title", "author"]])["genre"]
    return balanced_accuracy_score(test["genre"], predicted)


@pytest.mark.shared_data
def test_a_classifier_trained_on_other_data_is_judged_on_the_champions_test_split(project_dir: Path) -> None:
    """Real rows first, then deliberately the embedded data: v2 is registered, scored on v1's real test books, not promoted."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    from tasks.inputs.readers import read_listings
    from tasks.inputs.synthetic import generate_dataset

    real = read_listings(SHARED_DATA, ["amazon-books/book30-listing-train-partial.csv"], "auto").sample(6000, random_state=0)
    first = _train_on(real, _small_classifier(project_dir, SHARED_DATA), project_dir)
    assert first["registry"]["promoted"] is True
    mlflow_client = client()
    tags = mlflow_client.get_model_version("book-genre-classifier", "1").tags
    assert tags["data.source"] == str(SHARED_DATA.resolve()) and len(tags["data.test_split"]) == 16
    run_id = mlflow_client.get_model_version("book-genre-classifier", "1").run_id
    real_test = pd.read_parquet(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TEST_SPLIT_ARTIFACT))
    assert split_digest(real_test) == tags["data.test_split"]
    score_before = _champion_score_on(real_test)

    embedded = generate_dataset(project_dir / "data/raw/generated", listing_rows=1500, cover_books=20, seed=3)
    toy = read_listings(embedded.listing_csv.parents[1], ["amazon-books/*.csv"], "auto")
    second = _train_on(toy, _small_classifier(project_dir, Path("data/raw/generated")), project_dir)
    registry = second["registry"]
    assert registry["registered_version"] == "2" and registry["promoted"] is False
    assert "champion v1's test split" in registry["reason"] and "neither model trained on" in registry["reason"]
    assert registry["challenger_score"] < registry["previous_champion_score"]  # the toy model, on real books
    assert mlflow_client.get_model_version("book-genre-classifier", "2").tags["data.source"] == EMBEDDED
    assert champion_version(mlflow_client, "book-genre-classifier", "champion") == "1"
    decisions = alias_history(mlflow_client, "book-genre-classifier", "champion", promotions_only=False)
    assert [(d["version"], d["promoted"]) for d in decisions] == [("1", True), ("2", False)]
    assert decisions[-1]["reason"] == registry["reason"]
    assert _champion_score_on(real_test) == pytest.approx(score_before)
    assert json.loads((project_dir / "models/classifier/champion.json").read_text())["version"] == "1"
    print(json.dumps(decisions, indent=1))


def test_a_classifier_with_another_label_set_is_not_compared_and_can_be_promoted_by_hand(project_dir: Path, tiny_data) -> None:
    from tasks.inputs.readers import read_listings
    from tasks.inputs.synthetic import generate_dataset

    six = read_listings(tiny_data.listing_csv.parents[1], ["amazon-books/*.csv"], "auto")
    assert _train_on(six, _small_classifier(project_dir, tiny_data.listing_csv.parents[1]), project_dir)["registry"]["promoted"]
    other = generate_dataset(project_dir / "other", listing_rows=900, cover_books=20, seed=5, genres=9)
    nine = read_listings(other.listing_csv.parents[1], ["amazon-books/*.csv"], "auto")
    registry = _train_on(nine, _small_classifier(project_dir, other.listing_csv.parents[1]), project_dir)["registry"]
    assert registry["promoted"] is False and "another label set" in registry["reason"]
    assert "bookcovers promote classifier 2" in registry["reason"]

    from flows.bookcovers import main

    main(["--params", str(project_dir / "params.yaml"), "promote", "classifier", "2"])
    assert champion_version(client(), "book-genre-classifier", "champion") == "2"
    assert json.loads((project_dir / "models/classifier/champion.json").read_text())["version"] == "2"
    assert alias_history(client(), "book-genre-classifier", "champion")[-1]["reason"] == "promoted by hand (bookcovers promote)"
    with pytest.raises(SystemExit) as exited:
        main(["--params", str(project_dir / "params.yaml"), "promote", "classifier", "9"])
    assert exited.value.code == 2


# ------------------------------------------------------------------ CLIP


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ARG002
        return model_input


def test_a_clip_tested_on_other_covers_is_registered_not_promoted(project_dir: Path) -> None:
    """evaluate's decision: against its start when there is no champion; never across test books."""
    from tasks.clip.evaluation import _decide

    settings = load_settings(project_dir / "params.yaml", [*TINY_OVERRIDES, f"labeling.category_mapping={CATEGORY_MAPPING}"])
    name, mlflow_client = settings.mlflow.clip_model_name, client()
    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(name="model", python_model=Constant(), pip_requirements=["mlflow"]).model_uri
    books = pd.DataFrame({"book_id": ["a", "b"]})
    first = register_version(mlflow_client, name, uri, "covers A", "fp-1", {"data.test_books": "aaaa", "data.source": "/covers/a"})
    assert _decide(settings, mlflow_client, first, 0.30, 0.05, books, covers=None).promoted
    other = register_version(mlflow_client, name, uri, "covers B", "fp-2", {"data.test_books": "bbbb", "data.source": EMBEDDED})
    outcome = _decide(settings, mlflow_client, other, 0.90, 0.05, books, covers=None)
    assert not outcome.promoted and champion_version(mlflow_client, name, "champion") == first
    assert "was tested on other books" in outcome.reason and f"bookcovers promote clip {other}" in outcome.reason
    decisions = alias_history(mlflow_client, name, "champion", promotions_only=False)
    assert [(d["version"], d["promoted"]) for d in decisions] == [("1", True), ("2", False)]
    assert mlflow_client.get_model_version(name, other).tags["not_promoted"] == outcome.reason
    worse_start = register_version(mlflow_client, "another-clip", uri, "no champion", "fp-3", {"data.test_books": "cccc"})
    settings_other = load_settings(project_dir / "params.yaml", ["mlflow.clip_model_name=another-clip"])
    assert not _decide(settings_other, mlflow_client, worse_start, 0.04, 0.05, books, covers=None).promoted
