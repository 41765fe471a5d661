from __future__ import annotations

import json
import pickle

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from tasks.genre.features import FeatureBlocks, SentenceEncoder
from tasks.genre.models import GenreModel, calibrated_log_proba, candidate_specs, fit_temperature
from tasks.genre.pyfunc import GenreClassifierModel, classifier_frame
from tasks.genre.selection import CvData, ensemble_of_best_two, probability_scores, search
from tasks.genre.training import cv_rows, is_test_book, restrict_to_label_set, split_listing, train_and_select
from tasks.inputs.readers import normalized_text
from tasks.inputs.validation import validate_and_clean
from tasks.platform.errors import DataQualityError
from tasks.platform.registry import champion_version
from tasks.platform.settings import ClassifierSettings, Settings
from tasks.platform.tracking import client

CANDIDATES = [name for name in candidate_specs(ClassifierSettings()) if name != "minilm_finetuned"]  # tested in test_finetune
FAST = ClassifierSettings(random_forest_trees=20, random_forest_features=50, distill_titles=200, n_jobs=1, cv_folds=3)


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


@pytest.fixture(scope="module")
def fitted_blocks(small_listing: pd.DataFrame) -> tuple[FeatureBlocks, dict[str, object]]:
    names = ("title_words", "title_chars", "author", "title_embedding")
    return FeatureBlocks.fit(classifier_frame(small_listing), names, FAST)


def _fitted_model(name: str, listing: pd.DataFrame, fitted_blocks) -> GenreModel:
    blocks, matrices = fitted_blocks
    spec = candidate_specs(FAST)[name]
    features = blocks.subset(spec.blocks)
    estimator = spec.build(spec.grid[0], FAST).fit(features.transform(classifier_frame(listing)), listing["genre"])
    return GenreModel(name, features, estimator, estimator.classes_, temperature=1.0)


@pytest.mark.parametrize("name", CANDIDATES)
def test_every_candidate_learns_and_gives_probabilities(name: str, small_listing: pd.DataFrame, fitted_blocks) -> None:
    model = _fitted_model(name, small_listing, fitted_blocks)
    probabilities = model.predict_proba(classifier_frame(small_listing))
    assert probabilities.shape == (len(small_listing), 3)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert (model.predict(classifier_frame(small_listing)) == small_listing["genre"]).mean() > 0.9


def test_temperature_scaling_recovers_the_true_temperature_and_keeps_every_prediction() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in softmax(logits / 2.0, axis=1)])  # truth: temperature 2
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.0, rel=0.15)
    calibrated = calibrated_log_proba(logits, temperature)
    assert (calibrated.argmax(axis=1) == logits.argmax(axis=1)).all()
    before = probability_scores(labels, calibrated_log_proba(logits, 1.0))
    after = probability_scores(labels, calibrated)
    assert after["log_loss"] < before["log_loss"] and after["ece"] < before["ece"]


def test_calibration_error_is_zero_for_calibrated_and_large_for_overconfident_scores() -> None:
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.5, 1.0, 20000)
    correct = rng.uniform(size=20000) < confidence
    log_proba = np.log(np.column_stack([confidence, 1 - confidence]))
    labels = np.where(correct, 0, 1)
    assert probability_scores(labels, log_proba)["ece"] < 0.02
    overconfident = np.log(np.column_stack([np.full(20000, 0.99), np.full(20000, 0.01)]))
    assert probability_scores(labels, overconfident)["ece"] > 0.15


def _cv_data(listing: pd.DataFrame, fitted_blocks) -> CvData:
    from tasks.genre.training import cv_data

    _, matrices = fitted_blocks
    return cv_data(listing, matrices, sorted(listing["genre"].unique()), FAST)


def test_search_scores_every_default_and_spends_the_budget_on_the_rest(small_listing: pd.DataFrame, fitted_blocks) -> None:
    data = _cv_data(small_listing, fitted_blocks)
    specs = [candidate_specs(FAST)[name] for name in ("naive_bayes", "linear_svm")]
    no_budget = search(specs, FAST.model_copy(update={"search_budget_seconds": 0}), data)
    assert [len(r.points) for r in no_budget] == [1, 1]
    ample = search(specs, FAST.model_copy(update={"search_budget_seconds": 600}), data)
    assert [len(r.points) for r in ample] == [len(s.grid) for s in specs]
    for result in ample:
        assert result.oof_log_proba.shape == (len(data.labels), 3)
        assert np.allclose(np.exp(result.oof_log_proba).sum(axis=1), 1.0)
        assert result.best("balanced_accuracy").mean("balanced_accuracy") > 0.8


def test_ensemble_weight_is_chosen_by_cv_and_its_members_are_the_best_two(small_listing: pd.DataFrame, fitted_blocks) -> None:
    data = _cv_data(small_listing, fitted_blocks)
    specs = [candidate_specs(FAST)[name] for name in ("naive_bayes", "random_forest", "linear_svm")]
    results = search(specs, FAST.model_copy(update={"search_budget_seconds": 0}), data)
    ensemble = ensemble_of_best_two(results, FAST, data)
    ranked = sorted(results, key=lambda r: r.best("balanced_accuracy").mean("balanced_accuracy"), reverse=True)
    assert set(ensemble.members) == {ranked[0].name, ranked[1].name}
    assert ensemble.ensemble_weight in (0.3, 0.4, 0.5, 0.6, 0.7)
    assert ensemble.oof_log_proba.shape == (len(data.labels), 3)


def test_label_set_leaves_out_extra_genres_and_counts_them() -> None:
    listing = pd.DataFrame({"title": ["a", "b", "c"], "author": "", "genre": ["Travel", "Gay & Lesbian", "Education & Teaching"]})
    kept, left_out = restrict_to_label_set(listing, "bookcover30")
    assert kept["genre"].tolist() == ["Travel"]
    assert left_out == {"Gay & Lesbian": 1, "Education & Teaching": 1}
    assert len(restrict_to_label_set(listing, "book32")[0]) == 3
    with pytest.raises(DataQualityError, match="label_set=all"):
        restrict_to_label_set(listing.assign(genre="Poetry"), "bookcover30")
    assert len(restrict_to_label_set(listing.assign(genre="Poetry"), "all")[0]) == 3


def test_cv_sample_is_capped_and_keeps_every_genre(small_listing: pd.DataFrame) -> None:
    rows = cv_rows(small_listing, ClassifierSettings(cv_max_rows=100))
    assert len(rows) == 100 and len(set(rows)) == 100
    assert small_listing["genre"].iloc[rows].value_counts().min() >= 30
    assert len(cv_rows(small_listing, ClassifierSettings())) == len(small_listing)


def test_static_sentence_encoder_knows_word_meaning_and_pickles_without_the_transformer() -> None:
    titles = ["Paris travel guide", "Rome travel guide", "Quantum field theory", "Baking bread at home", "Chocolate cake recipes"]
    encoder = SentenceEncoder(distill_titles=100).fit(titles * 3)
    vectors = encoder.transform(titles)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] and similarity[3, 4] > similarity[3, 2]
    restored = pickle.loads(pickle.dumps(encoder))
    assert not hasattr(restored, "encoder_")
    assert np.allclose(restored.transform(titles), vectors, atol=1e-6)
    assert restored.transform([""]).shape == (1, vectors.shape[1])  # an empty title is a zero-safe vector, not a crash


def test_test_split_is_a_stable_function_of_the_book_id(small_listing: pd.DataFrame) -> None:
    ids = [f"book-{i}" for i in range(5000)]
    in_test = [is_test_book(i, 0.2) for i in ids]
    assert 0.17 < np.mean(in_test) < 0.23
    assert in_test == [is_test_book(i, 0.2) for i in ids]
    train, test = split_listing(small_listing, 0.2)
    reshuffled_train, reshuffled_test = split_listing(small_listing.sample(frac=1, random_state=3), 0.2)
    assert set(test["book_id"]) == set(reshuffled_test["book_id"])
    assert not set(train["book_id"]) & set(test["book_id"])


def test_pyfunc_contract_returns_genre_and_probability(small_listing: pd.DataFrame, fitted_blocks) -> None:
    model = _fitted_model("logistic_regression", small_listing, fitted_blocks)
    out = GenreClassifierModel(model).predict(None, pd.DataFrame({"title": ["Paris guide", "Baking recipes"], "author": [None, "X"]}))
    assert list(out.columns) == ["genre", "probability"]
    assert out["genre"].tolist() == ["Travel", "Cookbooks, Food & Wine"]
    assert ((out["probability"] > 0) & (out["probability"] <= 1)).all()


def test_stage_registers_the_winner_and_guards_the_champion(tiny_settings: Settings) -> None:
    """First run: v1 becomes champion. Same data again: the same model, so v1 again, and no new version."""
    validate_and_clean.fn(tiny_settings)
    first = train_and_select.fn(tiny_settings)
    assert first["selected"] in [*tiny_settings.classifier.candidates, "ensemble"]
    assert set(tiny_settings.classifier.candidates) <= set(first["candidates"]) | set(first["rejected"])
    for metric in ("accuracy_mean", "f1_macro_mean", "balanced_accuracy_mean"):
        assert 0.3 < first["cv"][metric] <= 1.0
    assert 0.0 < first["test"]["ece"] < 0.2
    assert set(first["test_per_class_f1"]) == set(pd.read_parquet(tiny_settings.paths.clean_listing)["genre"])
    assert first["registry"]["promoted"] is True
    for name, candidate in first["candidates"].items():  # every contender is scored on the test split, not the winner only
        assert 0.0 < candidate["test"]["balanced_accuracy"] <= 1.0, name
    assert first["candidates"][first["selected"]]["test"] == first["test"]
    cv_plot = pd.read_csv(tiny_settings.paths.plots_dir / "classifier_cv.csv")
    assert set(cv_plot.loc[cv_plot["metric"] == "test_balanced_accuracy", "candidate"]) == set(first["candidates"])
    champion_record = (tiny_settings.paths.classifier_dir / "champion.json").read_bytes()
    second = train_and_select.fn(tiny_settings)
    assert second["registry"]["registered_version"] == "1"
    assert second["registry"]["promoted"] is False
    assert champion_version(client(), "book-genre-classifier", "champion") == "1"
    assert len(client().search_model_versions("name='book-genre-classifier'")) == 1
    assert second["test"] == first["test"] and second["selected"] == first["selected"]
    assert (tiny_settings.paths.classifier_dir / "champion.json").read_bytes() == champion_record
    saved = json.loads((tiny_settings.paths.metrics_dir / "classifier.json").read_text())
    assert saved["registry"]["champion_version"] == "1"
    assert (tiny_settings.paths.classifier_dir / "champion.json").is_file()
    plots = tiny_settings.paths.plots_dir
    for name in ("classifier_cv.png", "classifier_confusion.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    per_class = pd.read_csv(plots / "classifier_per_class.csv")
    assert set(per_class["genre"]) == set(pd.read_parquet(tiny_settings.paths.clean_listing)["genre"])
    assert per_class[["precision", "recall", "f1"]].apply(lambda c: c.between(0, 1)).all().all()
    champion = mlflow.pyfunc.load_model("models:/book-genre-classifier@champion")
    predicted = champion.predict(pd.DataFrame({"title": ["Lonely Planet Paris"], "author": ["Rick Steves"]}))
    assert list(predicted.columns) == ["genre", "probability"] and len(predicted) == 1
    runs = client().search_runs([client().get_experiment_by_name("book-covers").experiment_id])
    candidate_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(candidate_runs) == len(first["candidates"]) + len(first["rejected"]) + len(second["candidates"]) + len(second["rejected"])
    assert all("git_commit" in r.data.tags and "data_md5.clean_listing" in r.data.tags for r in runs)
    parent = [r for r in runs if r.info.run_id == first["mlflow_run_id"]][0]
    artifacts = {a.path for a in client().list_artifacts(parent.info.run_id, "plots")}
    assert "plots/classifier_confusion.png" in artifacts and "plots/classifier_per_class.csv" in artifacts


def test_a_listing_without_authors_still_trains(small_listing: pd.DataFrame) -> None:
    """The 'Category,Title' table has no author column at all; the author features must not break the fit."""
    no_authors = small_listing.assign(author="")
    blocks = FeatureBlocks.fit(classifier_frame(no_authors), ("title_words", "author"), FAST)
    for name in ("naive_bayes", "logistic_regression"):
        model = _fitted_model(name, no_authors, blocks)
        assert (model.predict(classifier_frame(no_authors)) == no_authors["genre"]).mean() > 0.9


def test_relistings_of_a_title_stay_on_one_side_of_the_split() -> None:
    frame = pd.DataFrame({"book_id": [f"id{i}" for i in range(400)],
                          "title": [f"Title {i // 2}" + ("" if i % 2 else ":") for i in range(400)],
                          "author": "", "genre": "Travel"})
    train, test = split_listing(frame, 0.3)
    assert not set(normalized_text(train["title"])) & set(normalized_text(test["title"]))
    assert len(test) > 0


def test_a_champion_that_exists_but_cannot_load_is_an_error(project_dir) -> None:
    from tasks.genre.champion import _champion_model
    from tasks.platform.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="cannot be loaded"):
        _champion_model("models:/nothing@champion")


def test_the_ensemble_competes_only_when_it_beats_the_best_single_candidate() -> None:
    from tasks.genre.selection import CandidateResult, SearchPoint, choose_winner

    def result(name: str, score: float) -> CandidateResult:
        return CandidateResult(name, "", [SearchPoint({}, [{"balanced_accuracy": score}], np.zeros((1, 2)), 0.0)])

    singles = [result("linear_svm", 0.55), result("minilm_linear", 0.50)]
    winner, contenders, left_out = choose_winner(singles, result("ensemble", 0.57), "balanced_accuracy")
    assert winner.name == "ensemble" and len(contenders) == 3 and left_out is None
    winner, contenders, left_out = choose_winner(singles, result("ensemble", 0.55), "balanced_accuracy")
    assert winner.name == "linear_svm" and len(contenders) == 2 and left_out.name == "ensemble"
    nan_first = [result("naive_bayes", float("nan")), *singles]
    assert choose_winner(nan_first, None, "balanced_accuracy")[0].name == "linear_svm"


def _skewed_oof(seed: int = 0) -> tuple[CvData, np.ndarray, np.ndarray]:
    """Calibrated log-probabilities of a model that leans to a genre with 9x the rows of the other."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 900 + [1] * 100)
    evidence = np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1.2, len(labels))
    log_proba = np.log(softmax(np.column_stack([np.zeros(len(labels)), evidence]) + [[np.log(9), 0]], axis=1))
    folds = [(np.flatnonzero(np.arange(len(labels)) % 2 != k), np.flatnonzero(np.arange(len(labels)) % 2 == k)) for k in (0, 1)]
    log_prior = np.log([0.9, 0.1])
    return CvData({}, labels, folds, 2), log_proba, log_prior


def test_the_prior_shift_raises_balanced_accuracy_on_skewed_genres_and_is_chosen_by_cv() -> None:
    from tasks.genre.models import PriorShiftedModel
    from tasks.genre.selection import CandidateResult, SearchPoint, label_scores, shift_toward_balance

    data, log_proba, log_prior = _skewed_oof()
    folds = [label_scores(data.labels[h], log_proba[h].argmax(1)) for _, h in data.folds]
    result = CandidateResult("linear_svm", "", [SearchPoint({}, folds, log_proba, 0.0)], oof_log_proba=log_proba)
    before = result.score("balanced_accuracy")
    shift_toward_balance(result, log_prior, data, "balanced_accuracy")
    assert result.prior_shift > 0 and result.score("balanced_accuracy") > before + 0.05
    summary = result.summary("balanced_accuracy", data.labels)
    assert summary["prior_shift"] == result.prior_shift and summary["cv_before_prior_shift"]["balanced_accuracy_mean"] == before

    class Fixed:
        name, classes_ = "fixed", np.array(["big", "rare"])

        def log_proba(self, frame: pd.DataFrame) -> np.ndarray:
            return np.log(np.array([[0.8, 0.2]] * len(frame)))

    shifted = PriorShiftedModel(Fixed(), log_prior, 1.0)
    probabilities = shifted.predict_proba(pd.DataFrame({"title": ["x"]}))
    assert np.isclose(probabilities.sum(), 1.0) and shifted.predict(pd.DataFrame({"title": ["x"]}))[0] == "rare"


def test_no_prior_shift_is_kept_when_the_genres_are_balanced() -> None:
    from tasks.genre.selection import CandidateResult, SearchPoint, shift_toward_balance

    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 500)
    log_proba = np.log(softmax(np.column_stack([np.zeros(1000), np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 1, 1000)]), axis=1))
    folds = [(np.flatnonzero(np.arange(1000) % 2 != k), np.flatnonzero(np.arange(1000) % 2 == k)) for k in (0, 1)]
    data = CvData({}, labels, folds, 2)
    result = CandidateResult("x", "", [SearchPoint({}, [{"balanced_accuracy": 0.0}], log_proba, 0.0)], oof_log_proba=log_proba)
    shift_toward_balance(result, np.log([0.5, 0.5]), data, "balanced_accuracy")
    assert result.prior_shift == 0.0 and result.shifted_fold_scores is None
