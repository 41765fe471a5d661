"""Cover search: every cover embedded once by the champion CLIP, so a title (+ genre) finds its
covers and a cover finds its genre and the closest titles.

The index is a folder: the champion CLIP it was built with (so queries are embedded by the same
model, whatever the registry says later), `images.npy` and `captions.npy` (L2-normalised float32
rows, memory-mapped), `books.parquet` (what each row is) and `index.json`.

Exact search in NumPy rather than FAISS: at 100,000 covers a query is one (100k x d) matrix-vector
product, ~20 MFLOP at d = 128 and ~100 MFLOP at ViT-B/32's 512, a few milliseconds on two cores
(`make bench-search`); an approximate index would add a dependency and recall loss to save time
that is not the bottleneck (embedding the query is).
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image
from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from tasks.clip_data import load_images
from tasks.clip_model import ClipBundle, embed_images, embed_texts, load_saved_clip, square_cover
from tasks.errors import DataQualityError, InputFileError, ModelLoadError, UserError, require_inputs
from tasks.images import cover_rgb, pixel_limit
from tasks.labeling import make_captions
from tasks.settings import MlflowSettings, Settings
from tasks.tracking import champion_version, client, ensure_tracking_reachable

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 500
MAX_K = 50
MAX_UPLOAD_BYTES = 15 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
BOOK_COLUMNS = ["book_id", "title", "author", "genre", "category", "image_path"]


class SearchInputError(UserError, ValueError):
    """A query the search cannot answer: the message is for the person who typed it."""


def index_model(mlflow_client: MlflowClient, registry: MlflowSettings) -> dict[str, str | None]:
    """The CLIP the index is built with: the champion, or while there is none yet the newest complete version.

    A first fine-tuning that did not beat the model it started from leaves no champion (with the
    small from-scratch CLIP, recall sits at chance level and the comparison is a coin flip); the
    search still needs a model, and says which one it got. The next champion rebuilds the index.
    """
    name, alias = registry.clip_model_name, registry.champion_alias
    version = champion_version(mlflow_client, name, alias)
    if version is not None:
        return {"model": name, "version": version, "uri": f"models:/{name}@{alias}", "alias": alias}
    try:
        versions = [v for v in mlflow_client.search_model_versions(f"name='{name}'") if v.tags.get("registration") != "pending"]
    except MlflowException:
        versions = []
    if not versions:
        raise ModelLoadError(f"no version of {name} is registered; run the pipeline up to `evaluate` first")
    newest = str(max(int(v.version) for v in versions))
    log.warning("%s has no %s yet (no fine-tuning has beaten its starting point); indexing with its newest version %s",
                name, alias, newest)
    return {"model": name, "version": newest, "uri": f"models:/{name}/{newest}", "alias": None}


def champion_clip_folder(settings: Settings, target: Path) -> dict[str, str | None]:
    """Copy the index's CLIP (see `index_model`) saved folder into `target`; return what it is."""
    model = index_model(client(), settings.mlflow)
    try:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=model["uri"], dst_path=tempfile.mkdtemp(prefix="clip-index-"))
    except (MlflowException, OSError) as error:
        raise ModelLoadError(f"{model['uri']} cannot be loaded ({error}); run the pipeline up to `evaluate` first") from error
    shutil.copytree(Path(folder) / "artifacts" / "clip", target)
    shutil.rmtree(folder, ignore_errors=True)
    return model


def embed_in_chunks(bundle: ClipBundle, books: pd.DataFrame, captions: list[str], chunk: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image rows, caption rows, mask of covers that decoded): decoded a chunk at a time to bound memory."""
    images, texts, masks = [], [], []
    paths = books["image_path"].tolist()
    for start in tqdm(range(0, len(paths), chunk), desc="embed covers", unit="chunk", disable=len(paths) <= chunk):
        decoded, ok = load_images(paths[start:start + chunk], bundle.image_size, desc="decode covers")
        images.append(embed_images(bundle, decoded))
        texts.append(embed_texts(bundle, [c for c, keep in zip(captions[start:start + chunk], ok) if keep]))
        masks.append(ok)
    if not masks:
        empty = np.zeros((0, bundle.model.config.projection_dim), np.float32)
        return empty, empty, np.zeros(0, bool)
    return np.concatenate(images).astype(np.float32), np.concatenate(texts).astype(np.float32), np.concatenate(masks)


@task(name="index-covers", cache_policy=NO_CACHE)
def build_index(settings: Settings) -> dict[str, object]:
    """Embed every labeled cover with the champion CLIP into `paths.cover_index`."""
    paths = settings.paths
    require_inputs("index_covers", paths.labeled_covers)
    ensure_tracking_reachable()
    books = pd.read_parquet(paths.labeled_covers)
    paths.cover_index.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cover-index-", dir=paths.cover_index.parent))  # same filesystem: rename is atomic
    try:
        summary = _write_index(settings, books, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if paths.cover_index.exists():
        shutil.rmtree(paths.cover_index)
    staging.rename(paths.cover_index)  # the index appears whole or not at all
    log.info("indexed %d covers with %s v%s (%d could not be decoded)", summary["covers"], summary["model"], summary["version"],
             summary["left_out"])
    return summary


def _write_index(settings: Settings, books: pd.DataFrame, folder: Path) -> dict[str, object]:
    model = champion_clip_folder(settings, folder / "clip")
    bundle = load_saved_clip(folder / "clip", settings.clip.device)
    captions = make_captions(books, settings.labeling.caption_template).tolist()
    images, texts, ok = embed_in_chunks(bundle, books, captions)
    if not ok.any():
        raise DataQualityError(f"{settings.paths.labeled_covers}: no cover decodes any more; rerun the validate stage")
    kept = books.loc[ok, [c for c in BOOK_COLUMNS if c in books]].reset_index(drop=True)
    np.save(folder / "images.npy", images)
    np.save(folder / "captions.npy", texts)
    kept.to_parquet(folder / "books.parquet", index=False)
    summary = {**model, "covers": len(kept), "left_out": int((~ok).sum()), "dim": int(images.shape[1]),
               "caption_template": settings.labeling.caption_template}
    (folder / "index.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


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


@dataclass(frozen=True)
class CoverResult:
    genres: list[tuple[str, float]]  # zero-shot, most likely first
    hits: list[Hit]  # the closest titles


class CoverSearch:
    """A loaded index with the models that answer queries: load once, query many times."""

    def __init__(self, folder: Path, classifier: mlflow.pyfunc.PyFuncModel, zero_shot_template: str, device: str = "cpu") -> None:
        folder = Path(folder)
        if not (folder / "index.json").is_file():
            raise InputFileError(f"{folder}: no cover index; run the index_covers stage (`make run` or `dvc repro`)")
        self.info = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        self.images = np.load(folder / "images.npy", mmap_mode="r")
        self.captions = np.load(folder / "captions.npy", mmap_mode="r")
        self.books = pd.read_parquet(folder / "books.parquet")
        self.bundle = load_saved_clip(folder / "clip", device)
        self.classifier = classifier
        self.genres = sorted(self.books["genre"].dropna().unique())
        self.genre_prompts = embed_texts(self.bundle, [zero_shot_template.format(category=g) for g in self.genres])
        self.caption_template = self.info["caption_template"]

    @classmethod
    def from_settings(cls, settings: Settings) -> CoverSearch:
        try:
            classifier = mlflow.pyfunc.load_model(str(settings.paths.classifier_dir / "model"))
        except (MlflowException, OSError) as error:
            raise ModelLoadError(f"{settings.paths.classifier_dir}: the champion classifier cannot be loaded ({error}); "
                                 "run the train_classifier stage first") from error
        return cls(settings.paths.cover_index, classifier, settings.evaluate.zero_shot_template, settings.clip.device)

    def by_title(self, title: str, genre: str | None = None, k: int = 5) -> TitleResult:
        title, k = _checked_title(title), _checked_k(k)
        probability = None
        if not genre:
            predicted = self.classifier.predict(pd.DataFrame({"title": [title], "author": [""]}))
            genre, probability = str(predicted["genre"].iloc[0]), float(predicted["probability"].iloc[0])
        query = self.caption_template.format(title=title, author="unknown author", genre=genre, category="",
                                             probability=probability or 1.0)
        vector = embed_texts(self.bundle, [query])[0]
        return TitleResult(title, genre, probability, self._top(self.images, vector, k))

    def by_cover(self, data: bytes, k: int = 5) -> CoverResult:
        k = _checked_k(k)
        vector = embed_images(self.bundle, _decoded_upload(data, self.bundle.image_size))[0]
        logits = torch.tensor(self.genre_prompts @ vector) * self.bundle.model.logit_scale.exp().item()
        probabilities = torch.softmax(logits, dim=0).numpy()
        order = np.argsort(-probabilities)[:5]
        return CoverResult([(self.genres[i], float(probabilities[i])) for i in order], self._top(self.captions, vector, k))

    def cover_path(self, row: int) -> Path:
        if not 0 <= row < len(self.books):
            raise SearchInputError(f"no cover {row} in the index")
        return Path(self.books["image_path"].iloc[row])

    def _top(self, matrix: np.ndarray, vector: np.ndarray, k: int) -> list[Hit]:
        scores = matrix @ vector.astype(np.float32)
        k = min(k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k] if k else np.zeros(0, int)
        best = best[np.argsort(-scores[best])]
        rows = self.books.iloc[best]
        return [Hit(int(i), float(scores[i]), str(r.book_id), str(r.title), str(r.author or ""), str(r.genre), str(r.image_path))
                for i, r in zip(best, rows.itertuples(index=False))]


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


def _decoded_upload(data: bytes, size: int) -> np.ndarray:
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
