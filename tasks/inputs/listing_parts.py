"""A listing too large to hold, validated in parts on the data engine with memory bounded by the part.

Row checks need one row, uniqueness needs all of them, so a part is visited twice:
1. each part's rows go through the row suite on a worker, which keeps the rejected rows' reasons
   beside the part and sends back only the survivors' keys (suites.listing_keys, ~35 bytes a row);
2. the driver judges uniqueness on all keys at once (the same rules as in memory) and each part
   comes back to a worker with its verdicts, to write its clean rows and its quarantine rows.
The driver reads the CSV once, as a stream, and then holds keys, never rows: 2 million rows are
~70 MB of keys. Parts are numbered in input order and written in it, so the clean listing and the
quarantine are the rows `validate_listing` gives for the whole table, in the same order.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.inputs.outcomes import (
    PartedOutcome,
    clean_listing,
    merge_examples,
    quarantine_rows,
    reason_counts,
    reason_examples,
)
from tasks.inputs.stream import listing_chunks
from tasks.inputs.suites import Flags, listing_checks, listing_keys, listing_uniqueness_flags, run_suite, split, with_row_ids
from tasks.platform.engine import map_chunks
from tasks.platform.sections import EngineSettings
from tasks.platform.settings import RuntimeSettings, ValidateSettings

log = logging.getLogger(__name__)
EXAMPLES_PER_REASON = 5


def listing_frames(paths: list[Path], listing_format: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The listing files' rows, in order, as frames of exactly `chunk_rows` rows (the last one fewer):
    a part may span two files, and memory holds one part and one file chunk."""
    pending: list[pd.DataFrame] = []
    pending_rows = 0
    for path in paths:
        for frame in listing_chunks(path, chunk_rows, labeled=True, listing_format=listing_format):
            pending.append(frame)
            pending_rows += len(frame)
            while pending_rows >= chunk_rows:
                whole = pd.concat(pending, ignore_index=True)
                yield whole.iloc[:chunk_rows].reset_index(drop=True)
                rest = whole.iloc[chunk_rows:]
                pending, pending_rows = ([rest] if len(rest) else []), len(rest)
    if pending_rows:
        yield pd.concat(pending, ignore_index=True)


def listing_row_flags(frame: pd.DataFrame, settings: ValidateSettings) -> Flags:
    """row_id -> reasons of the rows the listing's row suite rejects (frame: with_row_ids applied)."""
    return run_suite(frame, "listing_rows", listing_checks(settings))


def settle_listing_rows(frame: pd.DataFrame, flags: Flags) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clean rows, quarantined rows with their reasons) once every flag of these rows is known."""
    kept, quarantined = split(frame, flags)
    quarantined["label"] = quarantined["genre"]
    return clean_listing(kept), quarantined


@task(name="check-listing-part", cache_policy=NO_CACHE)
def check_part(raw: str, first_row_id: int, rejected: str, settings: ValidateSettings) -> pd.DataFrame:
    """Pass 1: the row suite over one part; the rejected rows' reasons stay beside it, the survivors' keys go back."""
    frame = with_row_ids(pd.read_parquet(raw), first_row_id)
    flags = listing_row_flags(frame, settings)
    pd.DataFrame({"row_id": list(flags), "reason": [";".join(reasons) for reasons in flags.values()]},
                 columns=["row_id", "reason"]).to_parquet(rejected, index=False)
    return listing_keys(frame[~frame["row_id"].isin(flags.keys())], settings)


@task(name="settle-listing-part", cache_policy=NO_CACHE)
def settle_part(raw: str, first_row_id: int, rejected: str, verdicts: Flags, kept_out: str,
                quarantine_out: str) -> dict[str, Any]:
    """Pass 2: one part's rows with all their flags known, written as clean rows and quarantine rows."""
    frame = with_row_ids(pd.read_parquet(raw), first_row_id)
    reasons = pd.read_parquet(rejected)
    flags = {**{int(row): joined.split(";") for row, joined in zip(reasons["row_id"], reasons["reason"])}, **verdicts}
    clean, quarantined = settle_listing_rows(frame, flags)
    quarantined = quarantine_rows("listing", quarantined)
    clean.to_parquet(kept_out, index=False)
    quarantined.to_parquet(quarantine_out, index=False)
    return {"kept": len(clean), "quarantined": len(quarantined), "by_reason": reason_counts(quarantined),
            "examples": reason_examples(quarantined, EXAMPLES_PER_REASON)}


def _write_raw_parts(frames: Iterator[pd.DataFrame], work_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """Each frame as a Parquet part the workers read; (the parts' task arguments, rows in all)."""
    parts: list[dict[str, Any]] = []
    first_row_id = 0
    for number, frame in enumerate(frames):
        raw = work_dir / f"raw-{number:05d}.parquet"
        frame.to_parquet(raw, index=False)
        parts.append({"raw": str(raw), "first_row_id": first_row_id, "rejected": str(work_dir / f"rejected-{number:05d}.parquet")})
        first_row_id += len(frame)
    return parts, first_row_id


def _verdicts_by_part(flags: Flags, parts: list[dict[str, Any]]) -> list[Flags]:
    starts = [part["first_row_id"] for part in parts]
    by_part: list[Flags] = [{} for _ in parts]
    for row_id, reasons in flags.items():
        by_part[bisect.bisect_right(starts, row_id) - 1][row_id] = reasons
    return by_part


def validate_listing_parts(frames: Iterator[pd.DataFrame], settings: ValidateSettings, engine: EngineSettings,
                           runtime: RuntimeSettings | None, work_dir: Path) -> PartedOutcome:
    """Validate a listing given as frames, in parts on the engine; the outcome's parts live in `work_dir`
    (absolute, and on a filesystem the workers share)."""
    work_dir = work_dir.absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    parts, rows_in = _write_raw_parts(frames, work_dir)
    keys = map_chunks(check_part, [{**part, "settings": settings} for part in parts], engine, "check listing rows", runtime)
    survivors = pd.concat(keys, ignore_index=True)
    log.info("listing: %d parts, %d rows passed the row checks; judging uniqueness on their keys (%.0f MB)",
             len(parts), len(survivors), survivors.memory_usage(deep=True).sum() / 1e6)
    verdicts = _verdicts_by_part(listing_uniqueness_flags(survivors, settings.min_rows_per_genre), parts)
    del keys, survivors
    settle = [{**part, "verdicts": verdicts[number], "kept_out": str(work_dir / f"kept-{number:05d}.parquet"),
               "quarantine_out": str(work_dir / f"quarantine-{number:05d}.parquet")} for number, part in enumerate(parts)]
    results = map_chunks(settle_part, settle, engine, "write clean listing", runtime)
    by_reason: Counter[str] = Counter()
    for result in results:
        by_reason.update(result["by_reason"])
    kept, quarantined = sum(r["kept"] for r in results), sum(r["quarantined"] for r in results)
    if kept + quarantined != rows_in:
        raise AssertionError(f"listing: {rows_in} rows in but {kept} kept + {quarantined} quarantined")
    return PartedOutcome(
        name="listing", rows_in=rows_in,
        kept_parts=[Path(chunk["kept_out"]) for chunk in settle], quarantine_parts=[Path(chunk["quarantine_out"]) for chunk in settle],
        kept_rows=kept, quarantined_rows=quarantined, by_reason=dict(by_reason),
        first_examples=merge_examples([r["examples"] for r in results], EXAMPLES_PER_REASON),
    )
