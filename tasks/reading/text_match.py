"""Matching read cover text against titles by characters, not words.

The reader often drops the spaces between words ("THEULTIMATEATLAS") and misreads a letter here
and there, so both sides are lower-cased, stripped of everything but letters and digits, and cut
into character 3-4-grams; a TF-IDF cosine then scores a query against every document. The
n-grams are hashed (no vocabulary to keep), so documents can be appended to an index at any time
(add-covers) and give the same matrix a rebuild would: the index stores raw counts, and the IDF
weights follow from their document frequencies when it is opened.

Scoring goes through the columns the query has (a CSC matrix): the cost is the length of those
n-grams' posting lists, not the number of documents times the query length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

NGRAM_RANGE = (3, 4)  # 2-grams added nothing on the real test books (R@1/5/10 0.793/0.878/0.890 either way) and are the
# longest posting lists: without them a query reads a fraction of the postings
HASHED_FEATURES = 2**20
_NOT_ALNUM = re.compile(r"[\W_]+", re.UNICODE)


def squeezed(text: str | None) -> str:
    """Lower-cased letters and digits only: "The Ultimate Atlas!" and "THEULTIMATEATLAS" read the same."""
    return _NOT_ALNUM.sub("", (text or "").casefold())


def text_or_none(read_text: pd.Series) -> pd.Series:
    """Each cover as "text" or "no text": whether the reader found anything on it (the drift monitor's measure)."""
    return read_text.fillna("").astype(str).str.strip().ne("").map({True: "text", False: "no text"})


def _vectorizer() -> HashingVectorizer:
    return HashingVectorizer(
        analyzer="char",
        ngram_range=NGRAM_RANGE,
        n_features=HASHED_FEATURES,
        alternate_sign=False,
        norm=None,
        lowercase=False,
        preprocessor=squeezed,
        dtype=np.float32,
    )


def ngram_counts(texts: list[str]) -> sp.csr_matrix:
    """One row of hashed character n-gram counts per text (an empty text is an empty row)."""
    return _vectorizer().transform(["" if t is None else str(t) for t in texts]).tocsr()


def _l2_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms).astype(np.float32) @ matrix)


@dataclass
class TextMatcher:
    """TF-IDF cosine of queries against a fixed set of documents (the covers' read text, or the books' titles)."""

    weighted: sp.csc_matrix  # documents x features, IDF-weighted and L2-normalised rows, by column for scoring
    idf: np.ndarray
    query_weight: np.ndarray  # idf, zero for the n-grams a query skips (found in more than `common_share` of documents)

    @classmethod
    def from_counts(cls, counts: sp.csr_matrix, common_share: float = 1.0, common_min: int = 1000) -> TextMatcher:
        """Queries skip the n-grams found in more than `common_share` of the documents and in more than `common_min`
        of them. They weigh little (low IDF) but have the longest posting lists; skipping those above 2 % changed
        no recall on the real data (README). Short posting lists cost nothing: a small collection skips none."""
        documents = counts.shape[0]
        frequency = np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float32)
        idf = (np.log((1.0 + documents) / (1.0 + frequency)) + 1.0).astype(np.float32)
        weighted = _l2_rows(sp.csr_matrix(counts.multiply(idf[None, :])))
        common = frequency > max(common_share * documents, common_min)
        return cls(weighted.tocsc(), idf, np.where(common, 0.0, idf).astype(np.float32))

    @classmethod
    def from_texts(cls, texts: list[str], common_share: float = 1.0, common_min: int = 1000) -> TextMatcher:
        return cls.from_counts(ngram_counts(texts), common_share, common_min)

    @property
    def documents(self) -> int:
        return int(self.weighted.shape[0])

    def query_vectors(self, texts: list[str]) -> sp.csr_matrix:
        vectors = _l2_rows(sp.csr_matrix(ngram_counts(texts).multiply(self.query_weight[None, :])))
        vectors.eliminate_zeros()
        return vectors

    def scores(self, text: str) -> np.ndarray:
        """Cosine of one query against every document (zeros when the query has no letters or digits).

        Each of the query's n-grams adds its posting list in place: no submatrix is copied (at 1 M covers
        slicing the columns first cost twice the time, `make bench-hybrid`)."""
        query = self.query_vectors([text])
        out = np.zeros(self.documents, np.float32)
        weighted = self.weighted
        for column, value in zip(query.indices, query.data):
            start, stop = weighted.indptr[column], weighted.indptr[column + 1]
            out[weighted.indices[start:stop]] += value * weighted.data[start:stop]  # a column's rows are distinct
        return out

    def similarity(self, texts: list[str]) -> np.ndarray:
        """Queries x documents cosines, dense: for evaluation on a few thousand books."""
        return np.asarray((self.query_vectors(texts) @ self.weighted.T).toarray(), dtype=np.float32)


def save_counts(path: Path, counts: sp.csr_matrix) -> None:
    sp.save_npz(path, counts.astype(np.float32).tocsr(), compressed=False)


def load_counts(path: Path) -> sp.csr_matrix:
    return sp.load_npz(path).tocsr()
