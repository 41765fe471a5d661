from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from tasks.classifier import build_candidate, hyperparameters, is_test_book, split_listing, train_and_select
from tasks.readers import normalized_text
from tasks.serving import GenreClassifierModel, classifier_frame
from tasks.settings import ClassifierSettings, Settings
from tasks.tracking import champion_version, client
from tasks.validation import validate_and_clean

CANDIDATES = ClassifierSettings().candidates


@pytest.fixture(scope="module")
def small_listing() -> pd.DataFrame:
    words = {"Travel": ["guide", "paris", "rome", "itinerary"], "Cookbooks, Food & Wine": ["recipes", "baking", "kitchen", "soup"],
             "Romance": ["love", "heart", "duke", "kiss"]}
    rng = np.random.default_rng(0)
    rows = []
    for genre, vocabulary in words.items():
        for i in range(40):
            rows.append({"book_id": f"{genre[:3]}{i}", "title": " ".join(rng.choice(vocabulary, 3)) + f" {i}",
                         "author": f"Author {i % 7}", "genre": genre})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("name", CANDIDATES)
def test_every_candidate_learns_and_gives_probabilities(name: str, small_listing: pd.DataFrame) -> None:
    settings = ClassifierSettings(random_forest_trees=20, random_forest_features=50)
    model = build_candidate(name, settings).fit(classifier_frame(small_listing), small_listing["genre"])
    probabilities = model.predict_proba(classifier_frame(small_listing))
    assert probabilities.shape == (len(small_listing), 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert (model.predict(classifier_frame(small_listing)) == small_listing["genre"]).mean() > 0.9


def test_unknown_candidate_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown classifier candidate"):
        build_candidate("xgboost", ClassifierSettings())


def test_test_split_is_a_stable_function_of_the_book_id(small_listing: pd.DataFrame) -> None:
    ids = [f"book-{i}" for i in range(5000)]
    in_test = [is_test_book(i, 0.2) for i in ids]
    assert 0.17 < np.mean(in_test) < 0.23
    assert in_test == [is_test_book(i, 0.2) for i in ids]
    train, test = split_listing(small_listing, 0.2)
    reshuffled_train, reshuffled_test = split_listing(small_listing.sample(frac=1, random_state=3), 0.2)
    assert set(test["book_id"]) == set(reshuffled_test["book_id"])
    assert not set(train["book_id"]) & set(test["book_id"])


def test_pyfunc_contract_returns_genre_and_probability(small_listing: pd.DataFrame) -> None:
    pipeline = build_candidate("logistic_regression", ClassifierSettings()).fit(classifier_frame(small_listing), small_listing["genre"])
    out = GenreClassifierModel(pipeline).predict(None, pd.DataFrame({"title": ["Paris guide", "Baking recipes"], "author": [None, "X"]}))
    assert list(out.columns) == ["genre", "probability"]
    assert out["genre"].tolist() == ["Travel", "Cookbooks, Food & Wine"]
    assert ((out["probability"] > 0) & (out["probability"] <= 1)).all()


def test_stage_registers_the_winner_and_guards_the_champion(tiny_settings: Settings) -> None:
    """First run: v1 becomes champion. Same data again: v2 is registered but does not beat v1."""
    validate_and_clean.fn(tiny_settings)
    first = train_and_select.fn(tiny_settings)
    assert first["selected"] in CANDIDATES
    assert set(first["candidates"]) == set(tiny_settings.classifier.candidates)
    assert first["registry"]["promoted"] is True
    second = train_and_select.fn(tiny_settings)
    assert second["registry"]["registered_version"] == "2"
    assert second["registry"]["promoted"] is False
    assert champion_version(client(), "book-genre-classifier", "champion") == "1"
    saved = json.loads((tiny_settings.paths.metrics_dir / "classifier.json").read_text())
    assert saved["registry"]["champion_version"] == "1"
    assert (tiny_settings.paths.classifier_dir / "champion.json").is_file()
    champion = mlflow.pyfunc.load_model("models:/book-genre-classifier@champion")
    predicted = champion.predict(pd.DataFrame({"title": ["Lonely Planet Paris"], "author": ["Rick Steves"]}))
    assert list(predicted.columns) == ["genre", "probability"] and len(predicted) == 1
    runs = client().search_runs([client().get_experiment_by_name("book-covers").experiment_id])
    candidate_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(candidate_runs) == 2 * len(CANDIDATES)
    assert all("git_commit" in r.data.tags and "data_md5.clean_listing" in r.data.tags for r in runs)


def test_a_listing_without_authors_still_trains(small_listing: pd.DataFrame) -> None:
    """The 'Category,Title' table has no author column at all; the author features must not break the fit."""
    no_authors = small_listing.assign(author="")
    for name in ("naive_bayes", "linear_svm"):
        model = build_candidate(name, ClassifierSettings()).fit(classifier_frame(no_authors), no_authors["genre"])
        assert (model.predict(classifier_frame(no_authors)) == no_authors["genre"]).mean() > 0.9


def test_candidate_hyperparameters_are_logged_as_scalars(small_listing: pd.DataFrame) -> None:
    model = build_candidate("logistic_regression_cv", ClassifierSettings()).fit(classifier_frame(small_listing), small_listing["genre"])
    params = hyperparameters(model)
    assert params["model.C"] in (1.0, 4.0, 16.0)
    assert all(isinstance(v, (int, float, str, bool)) for v in params.values())


def test_relistings_of_a_title_stay_on_one_side_of_the_split() -> None:
    frame = pd.DataFrame({"book_id": [f"id{i}" for i in range(400)],
                          "title": [f"Title {i // 2}" + ("" if i % 2 else ":") for i in range(400)],
                          "author": "", "genre": "Travel"})
    train, test = split_listing(frame, 0.3)
    assert not set(normalized_text(train["title"])) & set(normalized_text(test["title"]))
    assert len(test) > 0


def test_a_champion_that_exists_but_cannot_load_is_an_error(project_dir, small_listing: pd.DataFrame) -> None:
    from tasks.classifier import champion_score_on
    from tasks.errors import ModelLoadError

    assert champion_score_on(small_listing, "models:/nothing@champion", "f1_macro", exists=False) is None
    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        champion_score_on(small_listing, "models:/nothing@champion", "f1_macro", exists=True)
