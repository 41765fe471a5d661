"""The cover index's text side: each cover's read text, and each book's title and author, as hashed
character n-gram counts (tasks/reading/text_match.py) beside the CLIP vectors, and the fusion
weights the index's CLIP is searched with (chosen on the validation books, tasks/clip/hybrid.py).

Counts, not weights, are stored, so an added batch is appended row-wise and the index equals a
rebuild; the IDF weights follow from the counts when the index is opened.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tasks.clip.data import split_frame, with_splits
from tasks.clip.hybrid import book_signals, chosen_weights, title_and_author
from tasks.clip.model import ClipBundle
from tasks.genre.labeling import accepted_genres, load_category_mapping, load_local_classifier
from tasks.platform.sections import HybridSettings
from tasks.platform.settings import Settings
from tasks.reading.text_match import TextMatcher, load_counts, ngram_counts, save_counts
from tasks.search.vectors import VectorFile

log = logging.getLogger(__name__)

READ_TEXT, BOOK_TEXT = "read_text.npz", "book_text.npz"


def write_text_counts(folder: Path, books: pd.DataFrame, previous: Path | None = None) -> None:
    """The n-gram counts of every row's read text and title + author; an add reuses the previous index's rows."""
    start = 0
    old: list[tuple[sp.csr_matrix, sp.csr_matrix]] = []
    if previous is not None and (previous / READ_TEXT).is_file() and (previous / BOOK_TEXT).is_file():
        reading, titles = load_counts(previous / READ_TEXT), load_counts(previous / BOOK_TEXT)
        if reading.shape[0] <= len(books):
            old, start = [(reading, titles)], reading.shape[0]
    new = books.iloc[start:]
    read_text = new["read_text"] if "read_text" in new else pd.Series("", index=new.index)
    parts = [*old, (ngram_counts(read_text.fillna("").tolist()), ngram_counts(title_and_author(new)))]
    save_counts(folder / READ_TEXT, sp.vstack([p[0] for p in parts]).tocsr())
    save_counts(folder / BOOK_TEXT, sp.vstack([p[1] for p in parts]).tocsr())


def open_text_matchers(folder: Path, hybrid: HybridSettings) -> tuple[TextMatcher | None, TextMatcher | None]:
    """(covers' read text, books' titles + authors), or (None, None) for an index built before reading covers."""
    if not ((folder / READ_TEXT).is_file() and (folder / BOOK_TEXT).is_file()):
        return None, None
    return tuple(
        TextMatcher.from_counts(load_counts(folder / name), hybrid.common_ngram_share, hybrid.common_ngram_min)
        for name in (READ_TEXT, BOOK_TEXT)
    )


def validation_rows(books: pd.DataFrame, labeled_rows: int, settings: Settings) -> pd.DataFrame:
    """The index rows of the pipeline's own validation books (added batches left out), with their row numbers."""
    own = books.iloc[:labeled_rows].assign(index_row=np.arange(min(labeled_rows, len(books))))
    return split_frame(with_splits(own, settings.clip.val_fraction, settings.clip.test_fraction), "val")


def index_fusion(
    settings: Settings, folder: Path, bundle: ClipBundle, books: pd.DataFrame, labeled_rows: int
) -> dict[str, object]:
    """The fusion weights for the index's CLIP, chosen on the validation books as the evaluate stage chooses them."""
    validation = validation_rows(books, labeled_rows, settings)
    if len(validation) < 2:
        log.warning("too few validation books (%d) to choose fusion weights; CLIP alone ranks", len(validation))
        return {"title_to_cover": 0.0, "cover_to_title": 0.0, "genre": 0.0, "chosen_on": f"{len(validation)} validation books"}
    rows = validation["index_row"].to_numpy()
    chunk = settings.vector_index.chunk_rows
    images, captions = VectorFile(folder / "images.npy").take(rows, chunk), VectorFile(folder / "captions.npy").take(rows, chunk)
    accepted = accepted_genres(validation, load_category_mapping(settings.labeling.category_mapping)).tolist()
    signals = book_signals(
        bundle,
        load_local_classifier(settings.paths.classifier_dir),
        validation,
        images,
        captions,
        settings.labeling.caption_template,
        settings.evaluate.zero_shot_template,
        accepted,
        settings.hybrid,
    )
    weights = chosen_weights(signals, settings.hybrid, settings.evaluate.recall_k)
    return {**weights, "chosen_on": f"{len(validation)} validation books"}
