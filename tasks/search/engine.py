"""Answers cover-search queries from the index folder (tasks/search/index.py): a title (+ genre)
finds its covers, a cover finds its genre and the closest titles.

The nearest rows come from tasks/search/vectors.py: an exact scan of the memory-mapped vectors for
collections up to `vector_index.approximate_above` covers (a few milliseconds at 100,000, where
embedding the query is the bottleneck), FAISS inverted lists with exact re-scoring above it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from PIL import Image

from tasks.clip.model import embed_images, embed_texts, load_saved_clip, prompt_probabilities
from tasks.genre.labeling import genre_distribution, load_local_classifier, title_query_caption, work_keys
from tasks.inputs.images import cover_rgb, pixel_limit, square_cover
from tasks.platform.errors import InputFileError
from tasks.platform.sections import HybridSettings, ReadingSettings
from tasks.platform.settings import Settings
from tasks.reading.fusion import fused, identified
from tasks.reading.reader import CoverReader
from tasks.search.queries import SearchInputError
from tasks.search.hybrid import fused_candidates
from tasks.search.text_index import open_text_matchers
from tasks.search.vectors import NearestRows, open_vectors

MAX_QUERY_CHARS = 500
MAX_K = 50
MAX_UPLOAD_BYTES = 15 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000


@dataclass(frozen=True)
class Hit:
    row: int  # the index row: the web page serves the cover by row, never by a path it was sent
    score: float  # the fused score the hits are ranked by
    book_id: str
    title: str
    author: str
    genre: str
    image_path: str
    clip_score: float = 0.0
    text_score: float = 0.0  # read-text match: the title against the cover's read text, or the read text against the title
    matched: str = "CLIP"  # why it was found: "read text", "CLIP", "read text + CLIP" (in each signal's own top k), or "fused"
    read_text: str = ""


@dataclass(frozen=True)
class TitleResult:
    query: str
    genre: str
    genre_probability: float | None  # None when the user chose the genre
    hits: list[Hit]
    low_confidence: bool = False  # predicted below search.low_confidence_below: a guess, shown as one


@dataclass(frozen=True)
class CoverResult:
    genres: list[tuple[str, float]]  # zero-shot fused with the classifier on the read text, most likely first
    hits: list[Hit]  # the closest titles
    embedding: np.ndarray | None = None  # the cover's, so other prompts can score it without embedding it again
    read_text: str | None = None  # what the reader read on the uploaded cover; None: not read (an index without read text)
    identified: Hit | None = None  # the one indexed book the read text names, with a margin (else None)
    low_confidence: bool = False  # the best genre's probability is under search.low_confidence_below


class CoverSearch:
    """A loaded index with the models that answer queries: load once, query many times."""

    def __init__(self, folder: Path, classifier: mlflow.pyfunc.PyFuncModel, zero_shot_template: str, device: str = "cpu",
                 low_confidence_below: float = 0.0, hybrid: HybridSettings | None = None,
                 reading: ReadingSettings | None = None) -> None:
        self.folder, self.device, self.zero_shot_template = Path(folder), device, zero_shot_template
        self.classifier = classifier
        self.low_confidence_below = low_confidence_below
        self.hybrid = hybrid or HybridSettings()
        self.reading = reading or ReadingSettings()
        self._reader: CoverReader | None = None
        self.stamp: tuple[int, int] | None = None
        self.info: dict[str, object] = {}
        self.bundle = None
        self.refresh()

    def refresh(self) -> bool:
        """Reload the index when it changed on disk (an `add-covers`, a rebuild): new covers are found at once.

        One stat per query; the CLIP is reloaded only when the index was rebuilt with another one.
        """
        index_json = self.folder / "index.json"
        if not index_json.is_file():
            raise InputFileError(f"{self.folder}: no cover index; run the index_covers stage (`make run` or `dvc repro`)")
        stat = index_json.stat()
        if (stat.st_ino, stat.st_mtime_ns) == self.stamp:
            return False
        info = json.loads(index_json.read_text(encoding="utf-8"))
        model_changed = self.bundle is None or (info.get("model"), info.get("version")) != (self.info.get("model"), self.info.get("version"))
        self.info, self.stamp = info, (stat.st_ino, stat.st_mtime_ns)
        self.images = open_vectors(self.folder, "images", info.get("approximate"))
        self.captions = open_vectors(self.folder, "captions", info.get("approximate"))
        self.books = pd.read_parquet(self.folder / "books.parquet")
        if model_changed:
            self.bundle = load_saved_clip(self.folder / "clip", self.device)
        self.read_text, self.book_text = open_text_matchers(self.folder, self.hybrid)
        self.keys = work_keys(self.books).to_numpy()
        self.fusion = {key: float((info.get("fusion") or {}).get(key, 0.0)) for key in ("title_to_cover", "cover_to_title", "genre")}
        self.genres = sorted(self.books["genre"].dropna().unique())
        self.genre_prompts = embed_texts(self.bundle, [self.zero_shot_template.format(category=g) for g in self.genres])
        self.caption_template = self.info["caption_template"]
        return True

    @classmethod
    def from_settings(cls, settings: Settings) -> CoverSearch:
        classifier = load_local_classifier(settings.paths.classifier_dir)
        return cls(settings.paths.cover_index, classifier, settings.evaluate.zero_shot_template, settings.clip.device,
                   settings.search.low_confidence_below, settings.hybrid, settings.reading)

    @property
    def reader(self) -> CoverReader:
        """The cover reader, loaded on the first cover query, with the options the index's covers were read with."""
        if self._reader is None:
            options = self.info.get("reading")
            self._reader = CoverReader(ReadingSettings(**options) if isinstance(options, dict) else self.reading)
        return self._reader

    def by_title(self, title: str, genre: str | None = None, k: int = 5, author: str = "") -> TitleResult:
        """Covers for a title (and its author, when known): CLIP on the caption built from the title's genre, fused
        with the title's match against each cover's read text."""
        title, k, author = _checked_title(title), _checked_k(k), (author or "").strip()[:MAX_QUERY_CHARS]
        self.refresh()
        probability = None
        if not genre:
            predicted = self.classifier.predict(pd.DataFrame({"title": [title], "author": [author]}))
            genre, probability = str(predicted["genre"].iloc[0]), float(predicted["probability"].iloc[0])
        vector = embed_texts(self.bundle, [title_query_caption(self.caption_template, title, genre, probability, author)])[0]
        text = self.read_text.scores(f"{title} {author}") if self.read_text is not None else None
        guess = probability is not None and probability < self.low_confidence_below
        return TitleResult(title, genre, probability, self._top(self.images, vector, text, self.fusion["title_to_cover"], k), guess)

    def by_cover(self, data: bytes, k: int = 5) -> CoverResult:
        """A cover's closest titles (CLIP fused with its read text against titles and authors), the book it names
        when its read text points at one with a margin, and its genre (zero-shot fused with the classifier on the text)."""
        k = _checked_k(k)
        self.refresh()
        vector = embed_images(self.bundle, decoded_upload(data, self.bundle.image_size))[0]
        read_text = self.reader.read(data).text if self.book_text is not None else None
        text = self.book_text.scores(read_text) if self.book_text is not None and read_text else None
        hits = self._top(self.captions, vector, text, self.fusion["cover_to_title"], k)
        genres = self._cover_genres(vector, read_text or "")
        found = None
        if text is not None:
            row = identified(text, self.keys, self.hybrid.identify_min_score, self.hybrid.identify_margin)
            found = None if row is None else self._hit(row, float(text[row]), 0.0, float(text[row]), "read text")
        low = bool(genres) and genres[0][1] < self.low_confidence_below
        return CoverResult(genres, hits, vector, read_text, found, low)

    def _cover_genres(self, vector: np.ndarray, read_text: str) -> list[tuple[str, float]]:
        """The five likeliest genres: CLIP zero-shot, fused with the classifier champion on the read text."""
        probabilities = prompt_probabilities(self.bundle, self.genre_prompts, vector)
        weight = self.fusion["genre"]
        if read_text and weight > 0:
            classes, on_text = genre_distribution(self.classifier, pd.DataFrame({"title": [read_text], "author": [""]}))
            by_genre = dict(zip(classes, on_text[0]))
            probabilities = fused(probabilities, np.asarray([by_genre.get(g, 0.0) for g in self.genres], np.float32), weight)
            probabilities = probabilities / max(float(probabilities.sum()), 1e-9)
        order = np.argsort(-probabilities, kind="stable")[:5]
        return [(self.genres[i], float(probabilities[i])) for i in order]

    def cover_path(self, row: int) -> Path:
        if not 0 <= row < len(self.books):
            raise SearchInputError(f"no cover {row} in the index")
        return Path(self.books["image_path"].iloc[row])

    def _top(self, vectors: NearestRows, vector: np.ndarray, text: np.ndarray | None, weight: float, k: int) -> list[Hit]:
        """The k best rows by the fused score, among each signal's own best `hybrid.candidates` rows."""
        ranked = fused_candidates(vectors, vector, text, weight, k, self.hybrid.candidates)
        return [self._hit(row, score, clip, text_score, matched) for row, score, clip, text_score, matched in ranked]

    def _hit(self, row: int, score: float, clip: float, text: float, matched: str) -> Hit:
        book = self.books.iloc[row]
        read_text = str(book["read_text"]) if "read_text" in book and isinstance(book["read_text"], str) else ""
        return Hit(int(row), float(score), str(book["book_id"]), str(book["title"]), str(book["author"] or ""),
                   str(book["genre"]), str(book["image_path"]), float(clip), float(text), matched, read_text)


def _checked_title(title: str) -> str:
    title = (title or "").strip()
    if not title:
        raise SearchInputError("type a book title to search for")
    if len(title) > MAX_QUERY_CHARS:
        raise SearchInputError(f"the title is {len(title)} characters long; search with at most {MAX_QUERY_CHARS}")
    return title


def _checked_k(k: int) -> int:
    if not 1 <= int(k) <= MAX_K:
        raise SearchInputError(f"k must be between 1 and {MAX_K}, got {k}")
    return int(k)


def decoded_upload(data: bytes, size: int) -> np.ndarray:
    """An uploaded cover as one uint8 image, refused with a sentence when it is not a usable image."""
    if not data:
        raise SearchInputError("the uploaded file is empty; choose a cover image")
    if len(data) > MAX_UPLOAD_BYTES:
        raise SearchInputError(f"the file is {len(data) / 2**20:.1f} MiB; upload a cover under {MAX_UPLOAD_BYTES // 2**20} MiB")
    try:
        with pixel_limit(MAX_UPLOAD_PIXELS), Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                raise SearchInputError(f"the image is {image.width}x{image.height} pixels; upload a smaller cover")
            rgb = cover_rgb(image)
    except SearchInputError:
        raise
    except Exception as error:  # noqa: BLE001  anything Pillow raises means "not an image we can read"
        raise SearchInputError(f"the file is not an image this search can read ({type(error).__name__})") from error
    return square_cover(rgb, size)[None]
