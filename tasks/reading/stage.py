"""The read_covers stage: every cover image of the clean covers read once, on the data engine.

One row per cover path (an image shelved in several folders is read once, by its content): its read
text (lines joined top to bottom), each line with its confidence and box, and the reason when the
cover could not be read (a file that no longer decodes, the reader's own failure): recorded, never fatal. The stage reads the
validated covers rather than the labeled ones, so a retrained classifier (new labels, same
images) does not make DVC read twelve thousand covers again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.platform.engine import chunk_bounds, describe, iter_chunks
from tasks.platform.errors import DataQualityError, require_inputs
from tasks.platform.outputs import write_json
from tasks.platform.sections import EngineSettings, ReadingSettings
from tasks.platform.settings import RuntimeSettings, Settings
from tasks.platform.tracking import log_stage_run
from tasks.reading.reader import READER_PACKAGE, CoverReading, reader_version, shared_reader

log = logging.getLogger(__name__)

TEXT_COLUMNS = ["image_path", "text", "lines", "read_error"]  # no timings: the same covers give the same bytes


def with_read_text(books: pd.DataFrame, cover_text: Path) -> pd.DataFrame:
    """`books` with each cover's read text (empty where the reader found none or failed) from the read_covers output."""
    texts = pd.read_parquet(cover_text, columns=["image_path", "text"]).drop_duplicates("image_path")
    text_of = dict(zip(texts["image_path"].astype(str), texts["text"].fillna("")))
    return books.assign(read_text=[text_of.get(str(path), "") for path in books["image_path"]])


def reading_row(image_path: str, reading: CoverReading) -> dict[str, object]:
    lines = [{"text": line.text, "confidence": line.confidence, "box": line.box} for line in reading.lines]
    return {"image_path": image_path, "text": reading.text, "lines": lines, "read_error": reading.error}


@task(name="read-covers-chunk", cache_policy=NO_CACHE)
def read_chunk(paths: list[str], options: dict[str, object]) -> list[dict[str, object]]:
    """Read covers on a worker with its one reader; one row per cover, in order."""
    reader = shared_reader(ReadingSettings(**options))
    return [reading_row(path, reader.read(Path(path))) for path in paths]


def content_keys(paths: list[str]) -> list[str]:
    """Each file's content digest (a file that cannot be opened: its own path), so one image shelved in several
    category folders is read once: 17,606 cover rows of the real data hold 12,190 distinct images."""
    keys = []
    for path in paths:
        try:
            keys.append(hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest())
        except OSError:
            keys.append(f"unreadable:{path}")
    return keys


def read_images(
    paths: list[str], options: ReadingSettings, engine: EngineSettings, runtime: RuntimeSettings | None = None
) -> pd.DataFrame:
    """Every path's reading (each distinct image read once, on the engine when there are chunks enough);
    `image_path` as given, in order."""
    keys = content_keys(paths)
    first = pd.Series(range(len(paths))).groupby(keys).min().sort_values()  # each distinct image's first path
    unique = [os.path.abspath(paths[i]) for i in first]  # a worker's working directory may not be ours
    chunks = [
        {"paths": unique[start:stop], "options": options.model_dump()}
        for start, stop in chunk_bounds(len(unique), engine.chunk_covers)
    ]
    rows = [row for part in iter_chunks(read_chunk, chunks, engine, "read covers", runtime) for row in part]
    by_key = dict(zip(first.index, rows))
    frame = pd.DataFrame([by_key[key] for key in keys], columns=TEXT_COLUMNS)
    frame["image_path"] = paths
    frame.attrs["distinct_images"] = len(unique)
    return frame


def reading_metrics(frame: pd.DataFrame, seconds: float, options: ReadingSettings, where: str) -> dict[str, object]:
    failed = frame["read_error"].notna()
    empty = (frame["text"].str.len() == 0) & ~failed
    return {
        "covers": len(frame),
        "with_text": int((~failed & ~empty).sum()),
        "no_text": int(empty.sum()),
        "failed": int(failed.sum()),
        "no_text_share": round(float(empty.mean()), 4) if len(frame) else 0.0,
        "mean_lines": round(float(frame["lines"].map(len).mean()), 2) if len(frame) else 0.0,
        "mean_chars": round(float(frame["text"].str.len().mean()), 1) if len(frame) else 0.0,
        "seconds": round(seconds, 1),
        "reader": f"{READER_PACKAGE} {reader_version()} (PP-OCRv4)",
        "options": options.model_dump(),
        "engine": where,
    }


@task(name="read-covers", cache_policy=NO_CACHE)
def read_covers(settings: Settings) -> dict[str, object]:
    paths = settings.paths
    require_inputs("read_covers", paths.clean_covers)
    images = pd.read_parquet(paths.clean_covers, columns=["image_path"])["image_path"].astype(str).drop_duplicates().tolist()
    if not images:
        raise DataQualityError(f"{paths.clean_covers} holds no covers to read; check the validate stage's quarantine")
    started = time.perf_counter()
    frame = read_images(images, settings.reading, settings.engine, settings.runtime)
    seconds = time.perf_counter() - started
    paths.cover_text.parent.mkdir(parents=True, exist_ok=True)
    partial = paths.cover_text.with_name(f".{paths.cover_text.name}.partial")
    frame.to_parquet(partial, index=False)
    os.replace(partial, paths.cover_text)
    distinct = int(frame.attrs["distinct_images"])  # the files were hashed once, by read_images
    metrics = {
        **reading_metrics(
            frame, seconds, settings.reading, describe(settings.engine, len(chunk_bounds(distinct, settings.engine.chunk_covers)))
        ),
        "distinct_images": distinct,
        "images_per_second": round(distinct / max(seconds, 1e-9), 1),
    }
    for reason in frame["read_error"].dropna().head(5):
        log.warning("a cover could not be read: %s", reason)
    log.info(
        "read %d covers (%d distinct images) in %.0f s (%.1f images/s, %s): %d with text, %d without, %d failed",
        metrics["covers"],
        distinct,
        seconds,
        metrics["images_per_second"],
        metrics["engine"],
        metrics["with_text"],
        metrics["no_text"],
        metrics["failed"],
    )
    metrics_file = write_json(paths.metrics_dir / "reading.json", metrics)
    numbers = {
        key: float(metrics[key])
        for key in ("covers", "distinct_images", "with_text", "no_text", "failed", "no_text_share", "images_per_second")
    }
    metrics["mlflow_run_id"] = log_stage_run(
        settings.mlflow.experiment,
        "read-covers",
        {"clean_covers": paths.clean_covers},
        numbers,
        [metrics_file],
        settings.data.source_label(),
    )
    return metrics
