"""The word-by-word vectorizers give scikit-learn's TF-IDF features, and one prediction computes each
block once however many blocks and ensemble members read it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.svm import LinearSVC

from tasks.genre.features import FeatureBlocks, TextBatch, transform_distinct
from tasks.genre.models import block_scores, raw_scores
from tasks.genre.words import CharNgramVectorizer, TitleWords, WordNgramVectorizer, tfidf_rows

TRAIN = [
    "The Art of Computer Programming", "The art of war", "Café au lait: a Paris cookbook", "CAFÉ SOCIETY",
    "Naïve Bayes for naive readers", "naive art, naïve painters", "Война и мир", "война и мир (том 1)",
    "東京 の 本", "東京 の 地図", "x", "", "  ", "C++ Primer", "C# in depth", "The C++ programming language",
    "Harry Potter and the Philosopher's Stone", "Harry Potter and the Chamber of Secrets",
    "A-Z of crafts: 100 projects", "100 projects for crafts", "ﬁne ﬁshing", "fine fishing",
    "Learning Python, 5th Edition", "Python Cookbook (3rd edition)", "The Paris Review", "Paris in the spring",
]
UNSEEN = ["The art of Python", "naïve café", "Война", "completely unseen words here", "", "東京", "C++ art war"]


def by_name(matrix: sp.csr_matrix, vocabulary: dict[str, int], names: list[str]) -> np.ndarray:
    return matrix[:, [vocabulary[name] for name in names]].toarray()


def test_word_ngrams_equal_scikit_learns_tfidf_on_fit_and_on_unseen_titles() -> None:
    reference = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode", min_df=2, dtype=np.float32)
    ours = WordNgramVectorizer(min_df=2)
    expected, got = reference.fit_transform(TRAIN), ours.fit_transform(TRAIN)
    assert set(ours.vocabulary_) == set(reference.vocabulary_)
    assert {"the art", "cafe", "naive"} <= set(ours.vocabulary_)  # accents stripped, bigrams kept
    names = sorted(reference.vocabulary_)
    np.testing.assert_allclose(by_name(got, ours.vocabulary_, names), by_name(expected, reference.vocabulary_, names), atol=1e-6)
    unseen_expected, unseen_got = reference.transform(UNSEEN), ours.transform(TitleWords.of(UNSEEN))
    np.testing.assert_allclose(by_name(unseen_got, ours.vocabulary_, names),
                               by_name(unseen_expected, reference.vocabulary_, names), atol=1e-6)
    assert list(ours.get_feature_names_out()) == names  # sklearn's column order


def test_word_ngrams_keep_the_most_frequent_features() -> None:
    titles = ["alpha beta"] * 5 + ["alpha gamma"] * 3 + ["delta"] * 2 + ["epsilon zeta"] * 2
    ours = WordNgramVectorizer(min_df=2, max_features=3).fit(titles)
    assert set(ours.vocabulary_) == {"alpha", "beta", "alpha beta"}


def test_character_ngrams_equal_scikit_learns_char_wb_tfidf() -> None:
    reference = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, strip_accents="unicode",
                                min_df=3, dtype=np.float32)
    ours = CharNgramVectorizer((2, 5), min_df=3)
    expected, got = reference.fit_transform(TRAIN), ours.fit_transform(TRAIN)
    assert set(ours.vocabulary_) == set(reference.vocabulary_)
    names = sorted(reference.vocabulary_)
    np.testing.assert_allclose(by_name(got, ours.vocabulary_, names), by_name(expected, reference.vocabulary_, names), atol=1e-6)
    np.testing.assert_allclose(by_name(ours.transform(UNSEEN), ours.vocabulary_, names),
                               by_name(reference.transform(UNSEEN), reference.vocabulary_, names), atol=1e-6)


@pytest.mark.parametrize("titles", [[], [""], ["   ", "qqqq qqq"]], ids=["no titles", "empty title", "unknown words"])
def test_titles_with_nothing_known_give_zero_rows(titles: list[str]) -> None:
    for vectorizer in (WordNgramVectorizer(min_df=1).fit(TRAIN), CharNgramVectorizer((2, 5), min_df=1).fit(TRAIN)):
        matrix = vectorizer.transform(titles)
        assert matrix.shape == (len(titles), len(vectorizer.vocabulary_))
        assert matrix.nnz == 0  # no q is in the training titles


def test_tfidf_rows_scales_every_non_empty_row_to_unit_length_whatever_rows_are_empty() -> None:
    counts = sp.csr_matrix(np.array([[0, 0, 0], [2, 0, 1], [0, 0, 0], [0, 3, 0], [0, 0, 0]], dtype=np.float32))
    weighted = tfidf_rows(counts, np.array([1.0, 2.0, 3.0], dtype=np.float32)).toarray()
    np.testing.assert_allclose(np.linalg.norm(weighted, axis=1), [0, 1, 0, 1, 0], atol=1e-6)
    first = np.array([1 + np.log(2), 0, 3.0])
    np.testing.assert_allclose(weighted[1], first / np.linalg.norm(first), atol=1e-6)


class CountingTransformer:
    """Wraps a fitted transformer and counts its transform calls."""

    def __init__(self, inner: object) -> None:
        self.inner, self.calls, self.rows = inner, 0, []
        self.reads_title_words = getattr(inner, "reads_title_words", False)

    def transform(self, values: object) -> object:
        self.calls += 1
        self.rows.append(len(values))
        return self.inner.transform(values)


def test_one_batch_computes_each_block_once_for_every_reader() -> None:
    frame = pd.DataFrame({"title": TRAIN, "author": ["Ann Author"] * len(TRAIN)})
    words = CountingTransformer(WordNgramVectorizer(min_df=1).fit(TRAIN))
    chars = CountingTransformer(CharNgramVectorizer((2, 5), min_df=1).fit(TRAIN))
    first = FeatureBlocks({"title_words": words, "title_chars": chars})
    second = FeatureBlocks({"title_words": words})  # an ensemble member sharing a fitted block
    batch = TextBatch(frame)
    stacked = first.transform(batch)
    shared = second.transform_blocks(batch)[0]
    assert (words.calls, chars.calls) == (1, 1)
    assert (shared != stacked[:, :shared.shape[1]]).nnz == 0
    assert batch.title_words.words.count("The") == 1  # the titles were split once, into distinct words


def test_repeated_authors_are_transformed_once_each_with_the_same_rows() -> None:
    authors = ["Ann Author", "Bob Writer", "Ann Author", "", "Bob Writer", "Ann Author"]
    vectorizer = CountingTransformer(TfidfVectorizer().fit(authors))
    direct = vectorizer.inner.transform(authors)
    distinct = transform_distinct(vectorizer, authors)
    assert (direct != distinct).nnz == 0
    assert vectorizer.rows == [3]  # Ann, Bob and the empty name, once each


@pytest.mark.parametrize("genres", [2, 4], ids=["binary", "multi-class"])
def test_a_linear_svm_scores_blocks_side_by_side_as_it_scores_them_stacked(genres: int) -> None:
    rng = np.random.default_rng(0)
    blocks = [sp.random(40, width, density=0.3, format="csr", random_state=i, dtype=np.float32) for i, width in enumerate((7, 5, 3))]
    labels = rng.integers(genres, size=40)
    svm = LinearSVC(C=1.0).fit(sp.hstack(blocks, format="csr"), labels)
    np.testing.assert_allclose(block_scores(svm, blocks), raw_scores(svm, sp.hstack(blocks, format="csr")), atol=1e-5)
    with pytest.raises(ValueError, match="columns"):
        block_scores(svm, blocks[:2])
