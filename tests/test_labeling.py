"""Labeling covers: one row per book, captions from a template, genres from the classifier's pyfunc contract."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from tasks.genre.features import FeatureBlocks
from tasks.genre.labeling import category_agreement, covers_by_book, label_books, load_category_mapping, make_captions
from tasks.genre.models import GenreModel, candidate_specs
from tasks.genre.pyfunc import GenreClassifierModel, classifier_frame
from tasks.inputs.synthetic import GENRE_TO_COVER_CATEGORY
from tasks.inputs.taxonomy import AMAZON_GENRES, BOOKDEPOSITORY_CATEGORIES
from tasks.platform.errors import InputFileError
from tasks.platform.settings import ClassifierSettings, LabelingSettings

TEMPLATE = LabelingSettings().caption_template

WORDS = {
    "Cookbooks": ("Recipes", "Baking", "Kitchen", "Bread", "Soups", "Desserts"),
    "Mystery": ("Murder", "Detective", "Killer", "Crime", "Witness", "Suspense"),
    "Computing": ("Python", "Programming", "Software", "Algorithms", "Database", "Linux"),
}
AUTHORS = {
    "Cookbooks": ("Julia Baker", "Anna Cook"),
    "Mystery": ("Agatha Stone", "Ray Chandler"),
    "Computing": ("Guido Rossum", "Ada Byte"),
}


def _training_frame() -> pd.DataFrame:
    rows = []
    for genre, words in WORDS.items():
        for i, (a, b) in enumerate(itertools.combinations(words, 2)):
            rows.append({"title": f"{a} and {b}", "author": AUTHORS[genre][i % 2], "genre": genre})
    return pd.DataFrame(rows)


class PyfuncLike:
    """What mlflow.pyfunc.load_model returns, minus MLflow: `.predict(frame)` on the wrapped PythonModel."""

    def __init__(self, python_model: GenreClassifierModel) -> None:
        self.python_model = python_model
        self.inputs: list[pd.DataFrame] = []

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.inputs.append(frame.copy())
        return self.python_model.predict(None, frame)


@pytest.fixture(scope="module")
def genre_model() -> GenreClassifierModel:
    frame = _training_frame()
    settings = ClassifierSettings()
    spec = candidate_specs(settings)["logistic_regression"]
    blocks, matrices = FeatureBlocks.fit(classifier_frame(frame), spec.blocks, settings)
    estimator = spec.build(spec.grid[0], settings).fit(blocks.transform(classifier_frame(frame)), frame["genre"])
    return GenreClassifierModel(GenreModel(spec.name, blocks, estimator, estimator.classes_, temperature=1.0))


def _covers(rows: list[tuple[str, str, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["book_id", "title", "author", "category", "image_path"])


# ---------------------------------------------------------------- covers_by_book


def test_covers_by_book_merges_categories_of_one_book() -> None:
    covers = _covers([
        ("111", "Bread and Soups", "Anna Cook", "Food-Drink", "covers/Food-Drink/111.jpg"),
        ("222", "Murder at Night", "Agatha Stone", "Crime-Thriller", "covers/Crime-Thriller/222.jpg"),
        ("111", "Bread and Soups", "Anna Cook", "Baking", "covers/Baking/111.jpg"),
        ("333", "Python Programming", "Ada Byte", "Computing", "covers/Computing/333.jpg"),
        ("222", "Murder at Night", "Agatha Stone", "Crime-Thriller", "covers/Crime-Thriller/222-dup.jpg"),
        ("444", "Garden Walks", "Flo Green", "Travel-Holiday-Guides", "covers/Travel-Holiday-Guides/444.jpg"),
        ("444", "Garden Walks", "Flo Green", "Home-Garden", "covers/Home-Garden/444.jpg"),
        ("444", "Garden Walks", "Flo Green", "Natural-History", "covers/Natural-History/444.jpg"),
        ("444", "Garden Walks", "Flo Green", "Art-Photography", "covers/Art-Photography/444.jpg"),
    ])
    books = covers_by_book(covers)
    assert len(books) == 4
    assert books["book_id"].tolist() == ["111", "222", "333", "444"]  # first-seen order, one row per book
    one = books.set_index("book_id")
    assert one.loc["111", "categories"] == "Baking|Food-Drink"  # sorted, joined by '|'
    assert one.loc["111", "category"] == "Baking"
    assert one.loc["111", "image_path"] == "covers/Food-Drink/111.jpg"  # the first image is kept
    assert one.loc["222", "categories"] == "Crime-Thriller"  # a repeated category is listed once
    assert one.loc["222", "image_path"] == "covers/Crime-Thriller/222.jpg"
    assert one.loc["333", "categories"] == "Computing"
    assert one.loc["444", "categories"] == "Art-Photography|Home-Garden|Natural-History|Travel-Holiday-Guides"
    assert one.loc["444", "category"] == "Art-Photography"
    assert one.loc["444", "image_path"] == "covers/Travel-Holiday-Guides/444.jpg"
    assert one.loc["333", "title"] == "Python Programming" and one.loc["333", "author"] == "Ada Byte"
    assert {"book_id", "title", "author", "image_path", "categories", "category"} <= set(books.columns)


def test_covers_by_book_empty_category_is_dropped() -> None:
    covers = _covers([
        ("1", "A", "x", "", "a.jpg"),
        ("1", "A", "x", "Travel-Holiday-Guides", "a2.jpg"),
        ("2", "B", "y", "", "b.jpg"),
    ])
    books = covers_by_book(covers).set_index("book_id")
    assert books.loc["1", "categories"] == "Travel-Holiday-Guides"
    assert books.loc["2", "categories"] == ""
    assert books.loc["2", "category"] == ""


# ---------------------------------------------------------------- make_captions


def test_make_captions_default_template() -> None:
    assert TEMPLATE == "{title} by {author}, {genre}"
    books = pd.DataFrame({
        "title": ["Bread and Soups", "Untitled"],
        "author": ["Anna Cook", ""],
        "genre": ["Cookbooks", "Mystery"],
        "category": ["Food-Drink", "Crime-Thriller"],
    }, index=[10, 20])
    captions = make_captions(books, TEMPLATE)
    assert captions.tolist() == ["Bread and Soups by Anna Cook, Cookbooks", "Untitled by unknown author, Mystery"]
    assert captions.index.tolist() == [10, 20]
    other = make_captions(books, "{genre}: {title} ({category})")
    assert other.tolist() == ["Cookbooks: Bread and Soups (Food-Drink)", "Mystery: Untitled (Crime-Thriller)"]


def test_make_captions_nan_author_renders_unknown_author() -> None:
    books = pd.DataFrame({"title": ["Untitled", "Other"], "author": [np.nan, None],
                          "genre": ["Mystery", "Mystery"], "category": ["c", "c"]})
    assert make_captions(books, TEMPLATE).tolist() == [
        "Untitled by unknown author, Mystery", "Other by unknown author, Mystery"]


# ---------------------------------------------------------------- GenreClassifierModel


def test_genre_model_predicts_clear_titles(genre_model: GenreClassifierModel) -> None:
    frame = pd.DataFrame({"title": ["Baking Bread", "Detective Murder", "Python Software"],
                          "author": ["Anna Cook", "Agatha Stone", "Ada Byte"]})
    out = genre_model.predict(None, frame)
    assert list(out.columns) == ["genre", "probability"]
    assert out["genre"].tolist() == ["Cookbooks", "Mystery", "Computing"]
    assert ((out["probability"] > 1 / 3) & (out["probability"] <= 1.0)).all()


def test_genre_model_handles_nan_and_missing_author(genre_model: GenreClassifierModel) -> None:
    titles = ["Kitchen Desserts", "Killer Witness", "Linux Database", "Crime Recipes"]
    with_nan = pd.DataFrame({"title": titles, "author": [np.nan, "Agatha Stone", None, np.nan]})
    no_author = pd.DataFrame({"title": titles})
    empty_author = pd.DataFrame({"title": titles, "author": ["", "Agatha Stone", "", ""]})
    blank = pd.DataFrame({"title": titles, "author": [""] * 4})

    nan_out = genre_model.predict(None, with_nan)
    none_out = genre_model.predict(None, no_author)
    for out in (nan_out, none_out):
        assert list(out.columns) == ["genre", "probability"]
        assert len(out) == len(titles)
        assert out["probability"].between(0, 1, inclusive="right").all()
        assert out["probability"].notna().all()
    # NaN authors are read as empty strings; no author column as all-empty
    pd.testing.assert_frame_equal(nan_out, genre_model.predict(None, empty_author))
    pd.testing.assert_frame_equal(none_out, genre_model.predict(None, blank))
    assert nan_out["genre"].tolist()[:3] == ["Cookbooks", "Mystery", "Computing"]


def test_genre_model_keeps_one_row_per_input_row_with_any_index(genre_model: GenreClassifierModel) -> None:
    frame = pd.DataFrame({"title": ["Baking", "Murder", "Python", "Baking"], "author": ["", "", "", ""]},
                         index=[7, 3, 3, 100])
    out = genre_model.predict(None, frame)
    assert len(out) == 4
    assert out.index.tolist() == [7, 3, 3, 100]  # callers can join predictions back to their rows
    assert out["genre"].tolist() == ["Cookbooks", "Mystery", "Computing", "Cookbooks"]


def test_classifier_frame_requires_title() -> None:
    with pytest.raises(ValueError, match="title"):
        classifier_frame(pd.DataFrame({"author": ["x"]}))
    frame = classifier_frame(pd.DataFrame({"title": [np.nan, "T"], "author": ["a", np.nan], "extra": [1, 2]}))
    assert list(frame.columns) == ["title", "author"]
    assert frame["title"].tolist() == ["", "T"] and frame["author"].tolist() == ["a", ""]


# ---------------------------------------------------------------- label_books


def test_label_books_with_fitted_classifier(genre_model: GenreClassifierModel) -> None:
    covers = _covers([
        ("111", "Baking Bread and Desserts", "Anna Cook", "Food-Drink", "c/111.jpg"),
        ("222", "The Detective and the Killer", "Agatha Stone", "Crime-Thriller", "c/222.jpg"),
        ("111", "Baking Bread and Desserts", "Anna Cook", "Health", "c/111b.jpg"),
        ("333", "Python Programming for Linux", "", "Computing", "c/333.jpg"),
    ])
    model = PyfuncLike(genre_model)
    books = label_books(covers, model, TEMPLATE)

    assert len(model.inputs) == 1
    assert list(model.inputs[0].columns) == ["title", "author"]  # only the contract's input columns
    assert len(model.inputs[0]) == 3  # once per book, not per cover row
    assert books["book_id"].tolist() == ["111", "222", "333"]
    assert books["genre"].tolist() == ["Cookbooks", "Mystery", "Computing"]
    assert books["genre_probability"].dtype == float
    assert ((books["genre_probability"] > 0) & (books["genre_probability"] <= 1)).all()
    expected = genre_model.predict(None, books[["title", "author"]])
    np.testing.assert_allclose(books["genre_probability"].to_numpy(), expected["probability"].to_numpy())
    assert books.loc[0, "categories"] == "Food-Drink|Health"
    for _, book in books.iterrows():
        assert book["genre"] in book["caption"]
        assert book["caption"].startswith(book["title"])
    assert books.loc[0, "caption"] == "Baking Bread and Desserts by Anna Cook, Cookbooks"
    assert books.loc[2, "caption"] == "Python Programming for Linux by unknown author, Computing"


def test_label_books_uses_predictions_in_row_order() -> None:
    """A stub model whose answers depend on the row: genres must land on the right books."""

    class Stub:
        def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"genre": [f"G-{t}" for t in frame["title"]],
                                 "probability": [str(0.5 + 0.1 * i) for i in range(len(frame))]},
                                index=range(100, 100 + len(frame)))

    covers = _covers([("b", "Beta", "x", "c1", "b.jpg"), ("a", "Alpha", "y", "c2", "a.jpg"),
                      ("b", "Beta", "x", "c3", "b2.jpg")])
    books = label_books(covers, Stub(), "{genre}|{title}")
    assert books["genre"].tolist() == ["G-Beta", "G-Alpha"]
    assert books["genre_probability"].tolist() == pytest.approx([0.5, 0.6])  # strings cast to float
    assert books["caption"].tolist() == ["G-Beta|Beta", "G-Alpha|Alpha"]


def test_editions_of_one_book_become_one_captioned_book() -> None:
    """Paperback and hardback (two ISBNs, same title and author) on both sides of a split would inflate recall."""
    covers = pd.DataFrame({
        "book_id": ["9780000000001", "9780000000002", "9780000000003"],
        "title": ["Dune", "Dune ", "Dune Messiah"], "author": ["Frank Herbert", "frank herbert", "Frank Herbert"],
        "category": ["Science-Fiction-Fantasy-Horror", "Teen-Young-Adult", "Science-Fiction-Fantasy-Horror"],
        "image_path": ["a.jpg", "b.jpg", "c.jpg"],
    })
    books = covers_by_book(covers)
    assert books["book_id"].tolist() == ["9780000000001", "9780000000003"]
    assert books.loc[0, "categories"] == "Science-Fiction-Fantasy-Horror|Teen-Young-Adult"


# ---------------------------------------------------------------- cover category -> Amazon genre mapping

MAPPING_FILE = LabelingSettings().category_mapping


def test_shipped_mapping_covers_every_cover_category_with_real_amazon_genres() -> None:
    mapping = load_category_mapping(MAPPING_FILE)
    assert set(mapping) == set(BOOKDEPOSITORY_CATEGORIES)
    assert all(genres and genres <= set(AMAZON_GENRES) for genres in mapping.values())


def test_shipped_mapping_agrees_with_how_the_generator_shelves_each_genre() -> None:
    mapping = load_category_mapping(MAPPING_FILE)
    for genre, category in GENRE_TO_COVER_CATEGORY.items():
        assert genre in mapping[category], f"{category} should map back to {genre}"


def test_agreement_counts_a_book_when_any_of_its_categories_maps_to_its_genre() -> None:
    mapping = {"Travel-Holiday-Guides": frozenset({"Travel"}), "Food-Drink": frozenset({"Cookbooks, Food & Wine"})}
    books = pd.DataFrame({
        "categories": ["Travel-Holiday-Guides", "Food-Drink|Travel-Holiday-Guides", "Food-Drink", "Poetry-Drama"],
        "category": ["Travel-Holiday-Guides", "Food-Drink", "Food-Drink", "Poetry-Drama"],
        "genre": ["Travel", "Travel", "Romance", "Romance"],
    })
    report = category_agreement(books, mapping)
    assert report["books_with_mapping"] == 3 and report["books_without_mapping"] == 1
    assert report["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert report["unmapped_categories"] == {"Poetry-Drama": 1}
    assert {k: report["per_category"]["Food-Drink"][k] for k in ("books", "agreement")} == {"books": 2, "agreement": 0.5}
    assert report["per_category"]["Travel-Holiday-Guides"] == {"books": 1, "agreement": 1.0, "top_genre": "Travel"}


@pytest.mark.parametrize("content, message", [
    ("Travel-Holiday-Guides: [Travels]\n", "not Amazon genres"),
    ("- just a list\n", "expected"),
    ("Travel: [unclosed\n", "cannot be read"),
])
def test_a_bad_mapping_file_is_one_clear_error(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(content)
    with pytest.raises(InputFileError, match=message):
        load_category_mapping(path)
    with pytest.raises(InputFileError, match="cannot be read"):
        load_category_mapping(tmp_path / "absent.yaml")


def test_a_caption_can_carry_the_calibrated_probability() -> None:
    books = pd.DataFrame({"title": ["Paris"], "author": ["A"], "genre": ["Travel"], "category": [""],
                          "genre_probability": [0.873]})
    assert make_captions(books, "{title}: {genre} ({probability:.0%})").tolist() == ["Paris: Travel (87%)"]
    assert LabelingSettings(caption_template="{genre} {probability:.2f}").caption_template
