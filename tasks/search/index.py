"""The index_covers stage: every labeled cover embedded once by the champion CLIP.

The index is a folder: the champion CLIP it was built with (so queries are embedded by the same
model, whatever the registry says later), `images.npy` and `captions.npy` (L2-normalised float32
rows, memory-mapped, written a chunk at a time as the covers are embedded), `books.parquet` (what each row is) and `index.json`; above a size also
`images.faiss` and `captions.faiss` (tasks/search/vectors.py). tasks/search/engine.py answers
queries from it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Self

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from tasks.clip.data import load_images
from tasks.clip.model import ClipBundle, embed_images, embed_texts, load_saved_clip
from tasks.clip.shards import labeled_shards
from tasks.clip.towers import embed_tower_features
from tasks.genre.labeling import make_captions, work_keys
from tasks.platform.engine import IN_PROCESS, chunk_bounds, iter_chunks, uses_cluster
from tasks.platform.errors import DataQualityError, ModelLoadError, require_inputs
from tasks.platform.outputs import staged_folder, write_json
from tasks.platform.registry import champion_version
from tasks.platform.sections import EngineSettings, VectorIndexSettings
from tasks.platform.settings import MlflowSettings, RuntimeSettings, Settings
from tasks.platform.tracking import client, ensure_tracking_reachable
from tasks.reading.stage import with_read_text
from tasks.search.text_index import index_fusion, write_text_counts
from tasks.search.vectors import VectorFile, VectorWriter, write_approximate

log = logging.getLogger(__name__)

BOOK_COLUMNS = ["book_id", "title", "author", "genre", "genre_probability", "category", "categories", "image_path", "read_text"]


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


Embedded = tuple[np.ndarray, np.ndarray, np.ndarray]  # (image rows, caption rows, mask of the chunk's covers that decoded)


def embedded_from_shards(bundle: ClipBundle, shards_folder: Path, books: pd.DataFrame, captions: list[str],
                         chunk_rows: int) -> Iterator[Embedded] | None:
    """The covers' embeddings from the shards' locked-tower features (no decoding, no image tower), when they fit,
    `chunk_rows` covers at a time."""
    shards = labeled_shards(shards_folder, books["image_path"].tolist())
    if shards is None or not shards.features_fit(bundle.model):
        return None
    decoded = shards.rows["shard_error"].isna().to_numpy()
    log.info("embedding %d covers from the shards' %s features", int(decoded.sum()), shards.feature_tower)

    def chunks() -> Iterator[Embedded]:
        for start, stop in chunk_bounds(len(books), chunk_rows):
            rows = start + np.flatnonzero(decoded[start:stop])
            yield (embed_tower_features(bundle.model, np.asarray(shards.features[rows])),
                   embed_texts(bundle, [captions[row] for row in rows]), decoded[start:stop])
    return chunks()


def _embed_paths(bundle: ClipBundle, paths: list[str], captions: list[str], workers: int) -> Embedded:
    decoded, ok = load_images(paths, bundle.image_size, workers=workers, desc="decode covers")
    return embed_images(bundle, decoded), embed_texts(bundle, [c for c, keep in zip(captions, ok) if keep]), ok


def _joined(parts: list[Embedded], dim: int) -> Embedded:
    if not parts:
        empty = np.zeros((0, dim), np.float32)
        return empty, empty, np.zeros(0, bool)
    images, texts, masks = zip(*parts)
    return np.concatenate(images).astype(np.float32), np.concatenate(texts).astype(np.float32), np.concatenate(masks)


def embedded_chunks(bundle: ClipBundle, books: pd.DataFrame, captions: list[str], chunk: int = 2048) -> Iterator[Embedded]:
    """The covers embedded in this process, a chunk at a time to bound memory."""
    paths = books["image_path"].tolist()
    for start, stop in tqdm(chunk_bounds(len(paths), chunk), desc="embed covers", unit="chunk", disable=len(paths) <= chunk):
        yield _embed_paths(bundle, paths[start:stop], captions[start:stop], workers=2)


def embed_in_chunks(bundle: ClipBundle, books: pd.DataFrame, captions: list[str], chunk: int = 2048) -> Embedded:
    """(image rows, caption rows, mask of covers that decoded), in this process, all in memory (small sets, tests)."""
    return _joined(list(embedded_chunks(bundle, books, captions, chunk)), bundle.model.config.projection_dim)


@lru_cache(maxsize=1)
def _worker_clip(folder: str, device: str) -> ClipBundle:
    """An engine worker loads the index's CLIP once, for every chunk it embeds."""
    return load_saved_clip(Path(folder), device)


@task(name="embed-covers-chunk", cache_policy=NO_CACHE)
def embed_chunk(clip_folder: str, device: str, paths: list[str], captions: list[str]) -> Embedded:
    return _embed_paths(_worker_clip(clip_folder, device), paths, captions, workers=1)  # a Dask worker may not start processes


@dataclass(frozen=True)
class CoverEmbedder:
    """The index's CLIP loaded here, and its saved folder, which engine workers load to embed their chunks."""

    bundle: ClipBundle
    folder: Path | None = None  # None: always in this process
    device: str = "auto"
    engine: EngineSettings = IN_PROCESS
    runtime: RuntimeSettings | None = None

    @property
    def dim(self) -> int:
        return int(self.bundle.model.config.projection_dim)

    def embed_chunks(self, books: pd.DataFrame, captions: list[str]) -> Iterator[Embedded]:
        """The covers embedded chunk by chunk, in order: on the engine when there are chunks enough."""
        bounds = chunk_bounds(len(books), self.engine.chunk_covers)
        if self.folder is None or not uses_cluster(self.engine, len(bounds)):
            return embedded_chunks(self.bundle, books, captions)
        paths = [os.path.abspath(path) for path in books["image_path"].astype(str)]  # a worker's working directory may not be ours
        chunks = [{"clip_folder": str(self.folder.resolve()), "device": self.device, "paths": paths[start:stop],
                   "captions": captions[start:stop]} for start, stop in bounds]
        return iter_chunks(embed_chunk, chunks, self.engine, "embed covers", self.runtime)

    def embed(self, books: pd.DataFrame, captions: list[str]) -> Embedded:
        """(image rows, caption rows, mask of covers that decoded), all in memory: for small sets."""
        return _joined(list(self.embed_chunks(books, captions)), self.dim)


@task(name="index-covers", cache_policy=NO_CACHE)
def build_index(settings: Settings) -> dict[str, object]:
    """Embed every labeled cover, then every added batch's (tasks/search/additions.py), with the champion CLIP."""
    paths = settings.paths
    require_inputs("index_covers", paths.labeled_covers, paths.cover_text)
    ensure_tracking_reachable()
    books = pd.read_parquet(paths.labeled_covers)
    settings.add_covers.batches_dir.mkdir(parents=True, exist_ok=True)  # a DVC dependency of this stage, empty until an add
    with staged_folder(paths.cover_index) as staging:  # the index appears whole or not at all
        summary = _write_index(settings, books, staging)
    log.info("indexed %d covers with %s v%s (%d could not be decoded; %d from added batches)", summary["covers"],
             summary["model"], summary["version"], summary["left_out"], sum(b["covers"] for b in summary["batches"]))
    return summary


class IndexRows:
    """An index folder being written: its books' table, and their vectors streamed to `images.npy` and
    `captions.npy` a chunk at a time, so writing an index never holds all its vectors (20 GB at 10 M covers)."""

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder = Path(folder)
        self.images, self.captions = VectorWriter(self.folder / "images.npy", dim), VectorWriter(self.folder / "captions.npy", dim)
        self.left_out = 0
        self.batches: list[dict[str, object]] = []
        self._books: list[pd.DataFrame] = []
        self._keys: set[str] = set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.images.close()
        self.captions.close()

    @property
    def covers(self) -> int:
        return self.images.rows

    @property
    def books(self) -> pd.DataFrame:
        return pd.concat(self._books, ignore_index=True) if self._books else pd.DataFrame(columns=BOOK_COLUMNS)

    def keys(self) -> set[str]:
        return self._keys

    def append(self, books: pd.DataFrame, images: np.ndarray, captions: np.ndarray, left_out: int = 0) -> None:
        if self._books:
            books = books[self._books[0].columns]
        if not len(books) == len(images) == len(captions):
            raise ValueError(f"{len(books)} books but {len(images)} image and {len(captions)} caption rows")
        self._books.append(books.reset_index(drop=True))
        self._keys.update(work_keys(books))
        self.images.write(images)
        self.captions.write(captions)
        self.left_out += left_out

    def append_embedded(self, books: pd.DataFrame, chunks: Iterator[Embedded]) -> int:
        """The books' rows as their chunks come (each chunk covers the next books in order); the covers kept."""
        start = kept = 0
        for images, captions, ok in chunks:
            part = books.iloc[start:start + len(ok)]
            start += len(ok)
            self.append(part[ok], images, captions, int((~ok).sum()))
            kept += int(ok.sum())
        return kept

    def append_index(self, index: Path, chunk_rows: int) -> None:
        """Every row of an existing index folder, its vectors copied a chunk at a time."""
        info = json.loads((index / "index.json").read_text(encoding="utf-8"))
        books = pd.read_parquet(index / "books.parquet")
        images, captions = VectorFile(index / "images.npy"), VectorFile(index / "captions.npy")
        for start, stop in chunk_bounds(len(books), chunk_rows):
            self.append(books.iloc[start:stop], images.read(start, stop), captions.read(start, stop))
        self.left_out += int(info.get("left_out", 0))
        self.batches.extend(info.get("batches", []))


def append_batch(rows: IndexRows, embedder: CoverEmbedder, batch: pd.DataFrame, batch_id: str, template: str) -> None:
    """A batch's books that are not in `rows` yet, embedded and appended; the same code for a full rebuild and an add."""
    new = batch.loc[~work_keys(batch).isin(rows.keys())].reset_index(drop=True)
    new = new.assign(caption=make_captions(new, template))
    for column in ("read_text", "categories"):  # a batch added before covers were read: searched by CLIP alone
        if column not in new:
            new[column] = ""
    covers = rows.append_embedded(new, embedder.embed_chunks(new, new["caption"].tolist()))
    rows.batches.append({"id": batch_id, "covers": covers})


def save_index(rows: IndexRows, model: dict[str, str | None], template: str, vector_settings: VectorIndexSettings,
               previous: Path | None = None) -> dict[str, object]:
    """Finish the index folder `rows` wrote; above `vector_settings.approximate_above` rows with its FAISS files.

    `previous` (the index an add-covers extends) lets its FAISS files grow instead of being retrained.
    """
    rows.close()
    folder = rows.folder
    books = rows.books
    books.to_parquet(folder / "books.parquet", index=False)
    write_text_counts(folder, books, previous)
    approximate = write_approximate(folder, len(books), vector_settings, previous)
    summary = {**model, "covers": len(books), "left_out": rows.left_out, "dim": rows.images.dim,
               "caption_template": template, "batches": rows.batches, "approximate": approximate,
               "covers_with_read_text": int((books["read_text"].fillna("") != "").sum()) if "read_text" in books else 0}
    write_json(folder / "index.json", summary)
    return summary


def _write_index(settings: Settings, books: pd.DataFrame, folder: Path) -> dict[str, object]:
    model = champion_clip_folder(settings, folder / "clip")
    embedder = cover_embedder(folder / "clip", settings)
    template = settings.labeling.caption_template
    captions = make_captions(books, template).tolist()
    chunks = (embedded_from_shards(embedder.bundle, settings.paths.cover_shards, books, captions, settings.vector_index.chunk_rows)
              or embedder.embed_chunks(books, captions))
    books = with_read_text(books, settings.paths.cover_text)
    with IndexRows(folder, embedder.dim) as rows:
        if not rows.append_embedded(books[[c for c in BOOK_COLUMNS if c in books]], chunks):
            raise DataQualityError(f"{settings.paths.labeled_covers}: no cover decodes any more; rerun the validate stage")
        labeled_rows = rows.covers
        for batch_id, batch in added_batches(settings.add_covers.batches_dir):
            append_batch(rows, embedder, batch, batch_id, template)
        summary = save_index(rows, model, template, settings.vector_index)
    summary["fusion"] = index_fusion(settings, folder, embedder.bundle, rows.books, labeled_rows)
    summary["reading"] = settings.reading.model_dump()
    write_json(folder / "index.json", summary)
    return summary


def cover_embedder(clip_folder: Path, settings: Settings) -> CoverEmbedder:
    """The saved CLIP in `clip_folder`, ready to embed covers here or on the settings' engine."""
    device = settings.clip.device
    return CoverEmbedder(load_saved_clip(clip_folder, device), clip_folder, device, settings.engine, settings.runtime)


def in_process_embedder(clip_folder: Path) -> CoverEmbedder:
    return CoverEmbedder(load_saved_clip(clip_folder, "cpu"), clip_folder)


def added_batches(batches_dir: Path) -> list[tuple[str, pd.DataFrame]]:
    """The batches `bookcovers add-covers` recorded, in the order they were added (their folders are numbered)."""
    folders = sorted(p for p in Path(batches_dir).glob("*/books.parquet")) if Path(batches_dir).is_dir() else []
    return [(folder.parent.name, pd.read_parquet(folder)) for folder in folders]
