"""The fine-tuned MiniLM candidate: it learns, stops on its budget, keeps its best checkpoint,
and travels inside its pickle. CPU only, a few seconds of training on a toy listing."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from tasks.genre.features import FeatureBlocks
from tasks.genre.finetune import FineTunedMiniLM, balanced_class_weights
from tasks.genre.models import GenreModel, candidate_specs
from tasks.genre.pyfunc import classifier_frame
from tasks.genre.selection import CvData, search
from tasks.platform.settings import ClassifierSettings, FineTuneSettings

WORDS = {"Travel": ["guide", "paris", "rome", "itinerary", "journey"],
         "Cookbooks, Food & Wine": ["recipes", "baking", "kitchen", "soup", "bread"],
         "Romance": ["love", "heart", "duke", "kiss", "bride"]}


@pytest.fixture(scope="module")
def toy_listing() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = [{"title": " ".join(rng.choice(vocabulary, 3)), "author": f"Author {i % 5}", "genre": genre}
            for genre, vocabulary in WORDS.items() for i in range(60)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(toy_listing: pd.DataFrame) -> FineTunedMiniLM:
    model = FineTunedMiniLM(budget_seconds=60, max_epochs=4, learning_rate=1e-4, batch_size=16, device="cpu")
    return model.fit(toy_listing[["title", "author"]].to_numpy(object), toy_listing["genre"].to_numpy())


def test_fine_tuning_learns_the_genres_and_keeps_its_best_validation_checkpoint(fitted: FineTunedMiniLM) -> None:
    rows = np.array([["a weekend in paris and rome", ""], ["bread and soup recipes", "A. Cook"],
                     ["the duke's secret bride", "Jane Doe"]], dtype=object)
    assert list(fitted.predict(rows)) == ["Travel", "Cookbooks, Food & Wine", "Romance"]
    losses = [point["validation_loss"] for point in fitted.history_]
    assert len(losses) >= 4 and losses[-1] < losses[0]
    assert fitted.epochs_seen_ == pytest.approx(4.0)


def test_the_budget_stops_training_early(toy_listing: pd.DataFrame) -> None:
    model = FineTunedMiniLM(budget_seconds=0.5, max_epochs=50, batch_size=8, device="cpu")
    model.fit(toy_listing[["title", "author"]].to_numpy(object), toy_listing["genre"].to_numpy())
    assert model.epochs_seen_ < 1.0
    assert model.history_ and model.history_[-1]["seconds"] < 10


def test_the_pickle_carries_weights_and_tokenizer_and_predicts_the_same(fitted: FineTunedMiniLM) -> None:
    rows = np.array([["rome itinerary", "X"], ["love and a kiss", ""]], dtype=object)
    restored = pickle.loads(pickle.dumps(fitted))
    assert np.allclose(restored.decision_function(rows), fitted.decision_function(rows), atol=1e-3)


def test_class_weights_make_every_genre_weigh_the_same() -> None:
    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights[0] * 3 == pytest.approx(weights[1] * 1)
    assert weights[2] == 0.0


def test_the_candidate_runs_through_cv_and_serves_from_a_title_frame(toy_listing: pd.DataFrame) -> None:
    settings = ClassifierSettings(candidates=["minilm_finetuned"], cv_folds=2, n_jobs=2, search_budget_seconds=0,
                                  finetune=FineTuneSettings(budget_seconds=8, max_epochs=2, batch_size=16, device="cpu"))
    spec = candidate_specs(settings)["minilm_finetuned"]
    assert not spec.parallel_folds
    blocks, matrices = FeatureBlocks.fit(classifier_frame(toy_listing), spec.blocks, settings)
    labels = pd.Categorical(toy_listing["genre"]).codes.astype(np.int64)
    halves = np.arange(len(labels)) % 2 == 0
    folds = [(np.flatnonzero(halves), np.flatnonzero(~halves)), (np.flatnonzero(~halves), np.flatnonzero(halves))]
    [result] = search([spec], settings, CvData(matrices, labels, folds, 3))
    assert result.score("balanced_accuracy") > 0.5  # chance is 1/3
    estimator = spec.build(spec.grid[0], settings).fit(matrices["title_author_text"], toy_listing["genre"].to_numpy())
    model = GenreModel(spec.name, blocks, estimator, estimator.classes_, result.temperature)
    probabilities = model.predict_proba(classifier_frame(pd.DataFrame({"title": ["soup and bread"]})))
    assert probabilities.shape == (1, 3) and np.isclose(probabilities.sum(), 1.0)
