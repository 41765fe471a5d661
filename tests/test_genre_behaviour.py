"""Behavioural tests of the genre classifier trained on the real Amazon rows (Made-With-ML style).

The model is trained once, by the real stage, on the cleaned shared listing (a lighter search so
it takes about a minute), and queried through the registry exactly as the labeling stage does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import PROJECT_ROOT, SHARED_DATA

from tasks.genre.training import train_and_select
from tasks.inputs.readers import read_listings
from tasks.inputs.validation import validate_listing
from tasks.platform.settings import load_settings

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.slow,
    pytest.mark.skipif(not (SHARED_DATA / "amazon-books").is_dir(), reason=f"real listings not present at {SHARED_DATA}"),
]

OBVIOUS = {
    "Rick Steves Paris 2016": "Travel",
    "Learning Python, 5th Edition": "Computers & Technology",
    "The Complete Vegetarian Cookbook": "Cookbooks, Food & Wine",
    "Calculus: Early Transcendentals": "Science & Math",
    "The Holy Bible: King James Version": "Christian Books & Bibles",
    "Cracking the GRE with 4 Practice Tests, 2017 Edition": "Test Preparation",
    "2017 Wall Calendar: Cats": "Calendars",
    "Gray's Anatomy for Students": "Medical Books",
}
PLAUSIBLE_AUTHORS = ("John Smith", "Maria Garcia", "David Lee", "Sarah Johnson", "")


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[mlflow.pyfunc.PyFuncModel]:
    work = tmp_path_factory.mktemp("behaviour")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        settings = load_settings(PROJECT_ROOT / "params.yaml", [
            f"data.root={SHARED_DATA}", f"paths.clean_listing={work / 'listing.parquet'}",
            "classifier.candidates=[linear_svm, minilm_linear]", "classifier.cv_folds=3",
            "classifier.cv_max_rows=15000", "classifier.search_budget_seconds=0", "classifier.distill_titles=5000",
        ])
        outcome = validate_listing(read_listings(settings.data.root, settings.data.listings), settings.validate_)
        outcome.kept.to_parquet(settings.paths.clean_listing, index=False)
        train_and_select.fn(settings)
        yield mlflow.pyfunc.load_model("models:/book-genre-classifier@champion")


def _genres(model: mlflow.pyfunc.PyFuncModel, titles: list[str], author: str) -> list[str]:
    return model.predict(pd.DataFrame({"title": titles, "author": author}))["genre"].tolist()


@pytest.mark.parametrize("title, genre", OBVIOUS.items())
def test_an_obvious_title_lands_in_the_obvious_genre(champion, title: str, genre: str) -> None:
    assert _genres(champion, [title], "")[0] == genre


def test_the_genre_does_not_change_when_only_the_author_changes(champion) -> None:
    titles = list(OBVIOUS)
    by_author = {author: _genres(champion, titles, author) for author in PLAUSIBLE_AUTHORS}
    reference = by_author[PLAUSIBLE_AUTHORS[0]]
    changed = {author: [t for t, a, b in zip(titles, reference, genres) if a != b] for author, genres in by_author.items()}
    assert not any(changed.values()), f"genre changed with the author: {changed}"


def test_probabilities_are_confident_on_obvious_titles_and_sum_to_one(champion) -> None:
    out = champion.predict(pd.DataFrame({"title": list(OBVIOUS), "author": ""}))
    assert (out["probability"] > 0.3).all(), out
    assert (out["probability"] <= 1.0).all()


def test_the_registered_model_is_small_enough_to_serve(champion) -> None:
    source = Path(mlflow.artifacts.download_artifacts("models:/book-genre-classifier@champion"))
    size = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    assert size < 400 * 2**20, f"the registered classifier is {size / 2**20:.0f} MiB"
