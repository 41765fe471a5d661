"""What validation decided about a table, and the files it writes: clean Parquet, the quarantine, its summary.

An outcome is held in memory (`TableOutcome`) or, for a listing too large to hold, lives in
Parquet parts written chunk by chunk (`PartedOutcome`, tasks/inputs/listing_parts.py). Both give
their rows as frames in row order, so the files written are the same rows either way and the
writer never holds more than one part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.platform.errors import DataQualityError
from tasks.platform.outputs import write_json
from tasks.platform.settings import Settings

QUARANTINE_COLUMNS = ["table", "source_file", "source_row", "book_id", "title", "author", "label", "image_ref", "reason",
                      "detail"]
CLEAN_LISTING_COLUMNS = ["book_id", "title", "author", "genre"]
Examples = dict[str, list[tuple[str, int]]]


class OutcomeCounts:
    """The figures every outcome reports, whatever holds its rows."""

    name: str
    rows_in: int
    by_reason: dict[str, int]

    @property
    def rows_kept(self) -> int:
        raise NotImplementedError

    @property
    def rows_quarantined(self) -> int:
        raise NotImplementedError

    def summary(self) -> dict[str, object]:
        return {
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_quarantined": self.rows_quarantined,
            "quarantined_fraction": round(self.rows_quarantined / self.rows_in, 6) if self.rows_in else 0.0,
            "by_reason": dict(sorted(self.by_reason.items())),
        }


@dataclass
class TableOutcome(OutcomeCounts):
    name: str
    kept: pd.DataFrame
    quarantined: pd.DataFrame
    rows_in: int
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def rows_kept(self) -> int:
        return len(self.kept)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantined)

    def kept_frames(self) -> Iterator[pd.DataFrame]:
        yield self.kept

    def quarantined_frames(self) -> Iterator[pd.DataFrame]:
        yield self.quarantined

    def examples(self, per_reason: int) -> Examples:
        return reason_examples(self.quarantined, per_reason)


@dataclass
class PartedOutcome(OutcomeCounts):
    """An outcome whose rows are in Parquet parts, in row order, in the stage's scratch folder (removed after the stage)."""

    name: str
    rows_in: int
    kept_parts: list[Path]
    quarantine_parts: list[Path]
    kept_rows: int
    quarantined_rows: int
    by_reason: dict[str, int]
    first_examples: Examples

    @property
    def rows_kept(self) -> int:
        return self.kept_rows

    @property
    def rows_quarantined(self) -> int:
        return self.quarantined_rows

    def kept_frames(self) -> Iterator[pd.DataFrame]:
        for part in self.kept_parts:
            yield pd.read_parquet(part)

    def quarantined_frames(self) -> Iterator[pd.DataFrame]:
        for part in self.quarantine_parts:
            yield pd.read_parquet(part)

    def examples(self, per_reason: int) -> Examples:
        return {reason: rows[:per_reason] for reason, rows in self.first_examples.items()}


Outcome = TableOutcome | PartedOutcome


def reason_examples(quarantined: pd.DataFrame, per_reason: int) -> Examples:
    """(file, row) of the first `per_reason` quarantined rows of each reason, in quarantine order."""
    examples: Examples = {}
    for source_file, source_row, joined in zip(quarantined["source_file"], quarantined["source_row"], quarantined["reason"]):
        for reason in joined.split(";"):
            rows = examples.setdefault(reason, [])
            if len(rows) < per_reason:
                rows.append((str(source_file), int(source_row) if pd.notna(source_row) else -1))
    return examples


def merge_examples(parts: list[Examples], per_reason: int) -> Examples:
    """The first examples of each reason over parts given in row order."""
    merged: Examples = {}
    for examples in parts:
        for reason, rows in examples.items():
            merged.setdefault(reason, []).extend(rows)
    return {reason: rows[:per_reason] for reason, rows in merged.items()}


def reason_counts(quarantined: pd.DataFrame) -> dict[str, int]:
    return dict(Counter(reason for joined in quarantined["reason"] for reason in joined.split(";")))


def quarantine_rows(name: str, quarantined: pd.DataFrame) -> pd.DataFrame:
    """The quarantined rows in the quarantine's columns, in row order (the order of the input)."""
    quarantined = quarantined.sort_values("row_id", kind="stable").copy()
    quarantined["table"] = name
    detail = quarantined["parse_error"].astype("object")
    if "image_error" in quarantined:
        detail = detail.fillna(quarantined["image_error"])
    quarantined["detail"] = detail
    for column in QUARANTINE_COLUMNS:
        if column not in quarantined:
            quarantined[column] = None
    return quarantined[QUARANTINE_COLUMNS].reset_index(drop=True)


def make_outcome(name: str, frame: pd.DataFrame, clean: pd.DataFrame, quarantined: pd.DataFrame) -> TableOutcome:
    quarantined = quarantine_rows(name, quarantined)
    if len(clean) + len(quarantined) != len(frame):
        raise AssertionError(f"{name}: {len(frame)} rows in but {len(clean)} kept + {len(quarantined)} quarantined")
    return TableOutcome(name, clean.reset_index(drop=True), quarantined, len(frame), reason_counts(quarantined))


def clean_listing(kept: pd.DataFrame) -> pd.DataFrame:
    """The clean listing's columns; a missing author is an empty one."""
    clean = kept[CLEAN_LISTING_COLUMNS].copy()
    clean["author"] = clean["author"].fillna("")
    return clean.reset_index(drop=True)


def quarantine_summary(outcomes: list[Outcome], examples: int = 5) -> str:
    """A page a person reads first: how much was set aside, why, and a few rows of each reason."""
    lines = ["# Quarantine summary", ""]
    for outcome in outcomes:
        s = outcome.summary()
        lines.append(f"## {outcome.name}: {s['rows_in']} rows in, {s['rows_kept']} kept, {s['rows_quarantined']} quarantined")
        lines.append("")
        if not outcome.by_reason:
            lines += ["Nothing quarantined.", ""]
            continue
        lines += ["| reason | rows | examples (file:row) |", "|---|---|---|"]
        first = outcome.examples(examples)
        for reason, count in sorted(outcome.by_reason.items(), key=lambda item: -item[1]):
            where = ", ".join(f"{Path(f).name}:{r}" for f, r in first.get(reason, []))
            lines.append(f"| {reason} | {count} | {where} |")
        lines.append("")
    return "\n".join(lines)


def _quarantine_table(frame: pd.DataFrame) -> pa.Table:
    frame = frame.astype({"source_row": "Int64"})
    for column in QUARANTINE_COLUMNS:
        if column != "source_row":
            frame[column] = frame[column].astype("string")
    return pa.Table.from_pandas(frame, preserve_index=False)


def write_tables(tables: Iterator[pa.Table], path: Path) -> None:
    """One Parquet file from tables of one schema, one row group each: memory holds one table."""
    writer: pq.ParquetWriter | None = None
    try:
        for table in tables:
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()


def write_clean_listing(outcome: Outcome, path: Path) -> None:
    schema = pa.schema([(column, pa.string()) for column in CLEAN_LISTING_COLUMNS])
    write_tables((pa.Table.from_pandas(frame[CLEAN_LISTING_COLUMNS], schema=schema, preserve_index=False)
                  for frame in outcome.kept_frames()), path)


def write_quarantine(outcomes: list[Outcome], path: Path) -> None:
    """Every table's quarantined rows in one file, part by part."""
    write_tables((_quarantine_table(frame) for outcome in outcomes for frame in outcome.quarantined_frames()), path)


def write_outputs(settings: Settings, listing: Outcome, covers: TableOutcome, data_source: str) -> dict[str, object]:
    paths = settings.paths
    for target in (paths.clean_listing, paths.clean_covers, paths.quarantine, paths.quarantine_summary, paths.metrics_dir):
        (target if target.suffix == "" else target.parent).mkdir(parents=True, exist_ok=True)
    write_clean_listing(listing, paths.clean_listing)
    covers.kept.to_parquet(paths.clean_covers, index=False)
    write_quarantine([listing, covers], paths.quarantine)
    paths.quarantine_summary.write_text(quarantine_summary([listing, covers]), encoding="utf-8")
    metrics = {"data_source": data_source, "listing": listing.summary(), "covers": covers.summary()}
    write_json(paths.metrics_dir / "validation.json", metrics)
    return metrics


def enforce_threshold(outcomes: list[Outcome], max_fraction: float, summary_path: Path) -> None:
    for outcome in outcomes:
        share = outcome.rows_quarantined / outcome.rows_in if outcome.rows_in else 1.0
        if outcome.rows_in == 0 or share > max_fraction:
            top = ", ".join(f"{reason} ({count})" for reason, count in Counter(outcome.by_reason).most_common(3))
            raise DataQualityError(
                f"{outcome.name}: {outcome.rows_quarantined} of {outcome.rows_in} rows quarantined "
                f"({share:.1%} > validate.max_quarantine_fraction={max_fraction:.1%}); main reasons: {top or 'no rows'}. "
                f"See {summary_path} and fix the input, or raise the threshold in params.yaml."
            )
