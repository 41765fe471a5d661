"""`add-covers`: a new covers folder validated, labeled by the classifier champion, embedded by
the CLIP that built the cover index, and appended to the index without rebuilding it.

Each batch is kept in `add_covers.batches_dir/<NNNN>-<digest>/` (its labeled books, quarantine and
record); the index_covers stage appends the same batches after the pipeline's covers with the same
code (`append_batch`), so a full rebuild gives the index the incremental path built, and DVC,
which versions the index, sees the batches folder as one of its inputs. A batch is known by a
digest of its covers file and images: adding the same folder twice adds nothing, and a book the
index already holds (same normalised title and author) is not added again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.genre.batch import GenrePredictor
from tasks.genre.labeling import label_books, load_champion_classifier
from tasks.inputs.outcomes import TableOutcome
from tasks.inputs.readers import read_covers
from tasks.inputs.validation import validate_covers
from tasks.platform.errors import InputFileError, require_inputs
from tasks.platform.outputs import staged_folder, write_json
from tasks.platform.reliability import pipeline_lock
from tasks.platform.engine import IN_PROCESS
from tasks.platform.sections import ReadingSettings, VectorIndexSettings
from tasks.platform.settings import Settings
from tasks.platform.tracking import log_stage_run
from tasks.reading.stage import read_images
from tasks.search.index import (
    BOOK_COLUMNS,
    CoverEmbedder,
    IndexRows,
    append_batch,
    cover_embedder,
    in_process_embedder,
    save_index,
    work_keys,
)

log = logging.getLogger(__name__)

BATCH_COLUMNS = BOOK_COLUMNS


@dataclass
class AddedBatch:
    """What one `add-covers` did; also the batch's record (batch.json)."""

    batch: str
    covers_file: str
    covers_format: str
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    books_new: int = 0
    books_already_indexed: int = 0
    covers_indexed: int = 0
    covers_with_read_text: int = 0
    index_covers: int = 0
    classifier_version: str | None = None
    clip_version: str | None = None
    already_added: bool = False
    seconds: float = 0.0
    folder: str = ""
    quarantine: str = ""


def covers_file(folder: Path) -> Path:
    """The covers CSV of a folder (its only .csv), or the CSV itself when given one."""
    folder = Path(folder)
    if folder.is_file():
        return folder
    if not folder.is_dir():
        raise InputFileError(f"{folder}: no such folder; give a covers folder (a CSV with title, author and image columns "
                             "beside its images) or the CSV itself")
    found = sorted(folder.glob("*.csv"))
    if len(found) != 1:
        named = ", ".join(p.name for p in found) or "none"
        raise InputFileError(f"{folder}: expected one covers CSV in the folder, found {len(found)} ({named}); "
                             "give the CSV's path instead")
    return found[0]


def batch_digest(csv: Path, kept: pd.DataFrame) -> str:
    """Same covers file, same images (names and sizes) -> same digest, wherever the folder was copied."""
    digest = hashlib.sha256(Path(csv).read_bytes())
    for path in sorted(kept["image_path"]):
        digest.update(f"{Path(path).name}\0{Path(path).stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def batch_folder(batches_dir: Path, digest: str) -> Path:
    """The batch's folder: the one already named after the digest (a retried add), else the next number."""
    existing = sorted(Path(batches_dir).glob(f"*-{digest}"))
    if existing:
        return existing[0]
    numbers = [int(p.name.split("-", 1)[0]) for p in Path(batches_dir).glob("*-*") if p.name.split("-", 1)[0].isdigit()]
    return Path(batches_dir) / f"{max(numbers, default=0) + 1:04d}-{digest}"


def read_index_books(index: Path) -> tuple[pd.DataFrame, dict[str, object]]:
    """An index's books and index.json, without its vectors (an add copies them a chunk at a time)."""
    return pd.read_parquet(index / "books.parquet"), json.loads((index / "index.json").read_text(encoding="utf-8"))


def validated_covers(csv: Path, settings: Settings) -> tuple[TableOutcome, str]:
    frame, covers_format = read_covers(csv, settings.add_covers.covers_format)
    return validate_covers(frame, covers_format, settings.validate_, settings.engine, settings.runtime), covers_format


def write_batch(folder: Path, books: pd.DataFrame, outcome: TableOutcome, record: AddedBatch) -> None:
    with staged_folder(folder) as staging:
        books[[c for c in BATCH_COLUMNS if c in books]].to_parquet(staging / "books.parquet", index=False)
        outcome.quarantined.to_csv(staging / "quarantine.csv", index=False)
        write_json(staging / "batch.json", asdict(record))


def write_quarantine(output_dir: Path, csv: Path, outcome: TableOutcome) -> Path:
    """Every add leaves its quarantined rows with their reasons, whether or not it adds covers."""
    path = Path(output_dir) / f"{csv.parent.name or 'covers'}.{csv.stem}.covers-quarantine.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    outcome.quarantined.to_csv(path, index=False)
    return path


def additions_markdown(summary: dict[str, object]) -> str:
    """What the Prefect UI shows for an add-covers run."""
    if summary["already_added"]:
        added = f"already in the index as batch {summary['batch']}: nothing added"
    else:
        added = (f"**{summary['covers_indexed']} covers added** to the index (now {summary['index_covers']}), "
                 f"{summary['covers_with_read_text']} of them with read text, {summary['books_already_indexed']} books already indexed")
    reasons = ", ".join(f"{reason} ({count})" for reason, count in dict(summary["by_reason"]).items()) or "none"
    return (f"# {summary['covers_file']}\n\n{summary['rows_in']} rows in, {summary['rows_kept']} kept, "
            f"{summary['rows_quarantined']} quarantined (reasons: {reasons}; rows in {summary['quarantine']}).\n\n{added}; "
            f"labeled by classifier v{summary['classifier_version']}, embedded by CLIP v{summary['clip_version']}.\n")


def read_in_process(paths: list[str], options: ReadingSettings | None) -> list[str]:
    """The covers' read text, read here (no cluster): for library callers without settings."""
    return read_images(paths, options or ReadingSettings(), IN_PROCESS)["text"].fillna("").tolist()


def link_tree(source: Path, target: Path) -> None:
    """The index's CLIP into the new index folder as hard links: no copy of hundreds of MB per added batch."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copytree(source, target, copy_function=link)


@task(name="add-covers", cache_policy=NO_CACHE)
def add_covers(settings: Settings, folder: Path) -> dict[str, object]:
    """Validate, label, embed and append one covers folder to the cover index (see the module's docstring)."""
    index = settings.paths.cover_index
    require_inputs("index_covers", index / "index.json")
    started = time.perf_counter()
    csv = covers_file(folder)
    outcome, covers_format = validated_covers(csv, settings)
    record = AddedBatch("", str(csv), covers_format, outcome.rows_in, len(outcome.kept), len(outcome.quarantined))
    record.quarantine = str(write_quarantine(settings.classify.output_dir, csv, outcome))
    def champion() -> tuple[GenrePredictor, str | None]:
        model, _, version = load_champion_classifier(settings)
        return model, version

    def reader(paths: list[str], options: ReadingSettings | None) -> list[str]:
        return read_images(paths, options or settings.reading, settings.engine, settings.runtime)["text"].fillna("").tolist()

    with pipeline_lock(settings.runtime.lock_file, settings.runtime.lock_wait_seconds):  # the index is the pipeline's output
        add_to_index(index, settings.add_covers.batches_dir, csv, outcome, record, champion, settings.vector_index,
                     partial(cover_embedder, settings=settings), reader)
    record.seconds = round(time.perf_counter() - started, 2)
    if record.folder:  # the batch's record, first written before its covers were embedded, now says what was indexed
        write_json(Path(record.folder) / "batch.json", asdict(record))
    summary = {**asdict(record), "by_reason": dict(outcome.by_reason)}
    summary["mlflow_run_id"] = log_stage_run(
        settings.mlflow.experiment, "add-covers", {"covers_file": csv},
        {k: float(summary[k]) for k in ("rows_in", "rows_kept", "rows_quarantined", "books_new", "covers_indexed", "index_covers")},
        [Path(record.folder) / "batch.json", Path(record.folder) / "quarantine.csv"] if record.folder else [],
    )
    log.info("%s: %d rows in, %d quarantined; %d covers added to the index (now %d), %d already there", csv,
             record.rows_in, record.rows_quarantined, record.covers_indexed, record.index_covers, record.books_already_indexed)
    return summary


def add_to_index(index: Path, batches_dir: Path, csv: Path, outcome: TableOutcome, record: AddedBatch,
                 classifier: Callable[[], tuple[GenrePredictor, str | None]], vector_settings: VectorIndexSettings,
                 embedder: Callable[[Path], CoverEmbedder] = in_process_embedder,
                 reader: Callable[[list[str], ReadingSettings | None], list[str]] = read_in_process) -> None:
    """Label the batch's new books, read their covers, keep the batch, append its covers to the index; fills `record` in.

    `classifier` loads the labeling model only when there is something new to label; `reader` reads the new
    covers' text with the options the index was read with (None: the defaults).
    """
    indexed, info = read_index_books(index)
    template = str(info["caption_template"])
    record.clip_version, record.index_covers = info.get("version"), len(indexed)
    if outcome.kept.empty:
        return
    record.batch = batch_digest(csv, outcome.kept)
    if any(str(batch["id"]).endswith(record.batch) for batch in info.get("batches", [])):
        record.already_added = True
        return
    model, record.classifier_version = classifier()
    books = label_books(outcome.kept, model, template)
    known = work_keys(books).isin(set(work_keys(indexed)))
    record.books_already_indexed, record.books_new = int(known.sum()), int((~known).sum())
    if not record.books_new:
        return
    folder = batch_folder(batches_dir, record.batch)
    record.batch, record.folder = folder.name, str(folder)
    new = books.loc[~known].reset_index(drop=True)
    options = info.get("reading")  # the index's covers and the added ones are read alike
    new["read_text"] = reader(new["image_path"].astype(str).tolist(), ReadingSettings(**options) if isinstance(options, dict) else None)
    record.covers_with_read_text = int((new["read_text"] != "").sum())
    write_batch(folder, new, outcome, record)
    encoder = embedder(index / "clip")
    with staged_folder(index) as staging, IndexRows(staging, encoder.dim) as rows:
        link_tree(index / "clip", staging / "clip")
        rows.append_index(index, vector_settings.chunk_rows)
        append_batch(rows, encoder, pd.read_parquet(folder / "books.parquet"), folder.name, template)
        kept = {**{k: info.get(k) for k in ("model", "version", "uri", "alias")}, **{k: info[k] for k in ("fusion", "reading") if k in info}}
        save_index(rows, kept, template, vector_settings, previous=index)
    record.covers_indexed = int(rows.batches[-1]["covers"])
    record.index_covers = rows.covers
