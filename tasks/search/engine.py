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
from mlflow.exceptions import MlflowException
from PIL import Image

from tasks.clip.model import embed_images, embed_texts, load_saved_clip, prompt_probabilities
from tasks.inputs.images import cover_rgb, pixel_limit, square_cover
from tasks.platform.errors import InputFileError, ModelLoadError
from tasks.platform.settings import Settings
from tasks.search.queries import SearchInputError
from tasks.search.vectors import NearestRows, open_vectors

MAX_QUERY_CHARS = 500
MAX_K = 50
MAX_UPLOAD_BYTES = 15 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000


@dataclass(frozen=True)
class Hit:
    row: int  # the index row: the web page serves the cover by row, never by a path it was sent
    score: float
    book_id: str
    title: str
    author: str
    genre: str
    image_path: str


@dataclass(frozen=True)
class TitleResult:
    query: str
    genre: str
    genre_probability: float | None  # None when the user chose the genre
    hits: list[Hit]
    low_confidence: bool = False  # predicted below search.low_confidence_below: a guess, shown as one


@dataclass(frozen=True)
class CoverResult:
    genres: list[tuple[str, float]]  # zero-shot, most likely first
    hits: list[Hit]  # the closest titles
    embedding: np.ndarray | None = None  # the cover's, so other prompts can score it without embedding it again


class CoverSearch:
    """A loaded index with the models that answer queries: load once, query many times."""

    def __init__(self, folder: Path, classifier: mlflow.pyfunc.PyFuncModel, zero_shot_template: str, device: str = "cpu",
                 low_confidence_below: float = 0.0) -> None:
        self.folder, self.device, self.zero_shot_template = Path(folder), device, zero_shot_template
        self.classifier = classifier
        self.low_confidence_below = low_confidence_below
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
        self.genres = sorted(self.books["genre"].dropna().unique())
        self.genre_prompts = embed_texts(self.bundle, [self.zero_shot_template.format(category=g) for g in self.genres])
        self.caption_template = self.info["caption_template"]
        return True

    @classmethod
    def from_settings(cls, settings: Settings) -> CoverSearch:
        try:
            classifier = mlflow.pyfunc.load_model(str(settings.paths.classifier_dir / "model"))
        except (MlflowException, OSError) as error:
            raise ModelLoadError(f"{settings.paths.classifier_dir}: the champion classifier cannot be loaded ({error}); "
                                 "run the train_classifier stage first") from error
        return cls(settings.paths.cover_index, classifier, settings.evaluate.zero_shot_template, settings.clip.device,
                   settings.search.low_confidence_below)

    def by_title(self, title: str, genre: str | None = None, k: int = 5) -> TitleResult:
        title, k = _checked_title(title), _checked_k(k)
        self.refresh()
        probability = None
        if not genre:
            predicted = self.classifier.predict(pd.DataFrame({"title": [title], "author": [""]}))
            genre, probability = str(predicted["genre"].iloc[0]), float(predicted["probability"].iloc[0])
        query = self.caption_template.format(title=title, author="unknown author", genre=genre, category="",
                                             probability=probability or 1.0)
        vector = embed_texts(self.bundle, [query])[0]
        guess = probability is not None and probability < self.low_confidence_below
        return TitleResult(title, genre, probability, self._top(self.images, vector, k), guess)

    def by_cover(self, data: bytes, k: int = 5) -> CoverResult:
        k = _checked_k(k)
        self.refresh()
        vector = embed_images(self.bundle, decoded_upload(data, self.bundle.image_size))[0]
        probabilities = prompt_probabilities(self.bundle, self.genre_prompts, vector)
        order = np.argsort(-probabilities)[:5]
        return CoverResult([(self.genres[i], float(probabilities[i])) for i in order], self._top(self.captions, vector, k), vector)

    def cover_path(self, row: int) -> Path:
        if not 0 <= row < len(self.books):
            raise SearchInputError(f"no cover {row} in the index")
        return Path(self.books["image_path"].iloc[row])

    def _top(self, vectors: NearestRows, vector: np.ndarray, k: int) -> list[Hit]:
        best, scores = vectors.top(vector, k)
        rows = self.books.iloc[best]
        return [Hit(int(i), float(score), str(r.book_id), str(r.title), str(r.author or ""), str(r.genre), str(r.image_path))
                for i, score, r in zip(best, scores, rows.itertuples(index=False))]


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
