"""Classify a new listing with the classifier champion, no retraining: `bookcovers classify`.

The file is read as a stream of chunks (tasks/inputs/stream.py); each chunk is validated with
the listing suite's row checks, its good rows predicted and appended to the output, its bad
rows appended to a quarantine file beside it with their reasons. Memory holds one chunk
whatever the file's size, and rows in = rows classified + rows quarantined, checked at the end.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from tasks.genre.labeling import load_champion_classifier
from tasks.inputs.outcomes import QUARANTINE_COLUMNS
from tasks.inputs.stream import listing_chunks
from tasks.inputs.validation import validate_unlabeled_listing
from tasks.platform.errors import InputFileError
from tasks.platform.outputs import write_json
from tasks.platform.settings import Settings, ValidateSettings
from tasks.platform.tracking import log_stage_run

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["source_row", "book_id", "title", "author", "genre", "probability", "model_version"]
OUTPUT_SUFFIXES = (".csv", ".parquet")


class GenrePredictor(Protocol):
    def predict(self, frame: pd.DataFrame) -> pd.DataFrame: ...


@dataclass
class ClassifyReport:
    listing: str
    output: str
    quarantine: str
    model_version: str
    rows_in: int = 0
    rows_classified: int = 0
    rows_quarantined: int = 0
    seconds: float = 0.0
    predict_seconds: float = 0.0
    by_reason: Counter = field(default_factory=Counter)
    genres: Counter = field(default_factory=Counter)
    probability_sum: float = 0.0

    def summary(self) -> dict[str, object]:
        return {
            "listing": self.listing, "output": self.output, "quarantine": self.quarantine, "model_version": self.model_version,
            "rows_in": self.rows_in, "rows_classified": self.rows_classified, "rows_quarantined": self.rows_quarantined,
            "quarantined_by_reason": dict(self.by_reason.most_common()),
            "seconds": round(self.seconds, 2),
            "rows_per_second": round(self.rows_in / max(self.seconds, 1e-9), 1),
            "titles_per_second_predicting": round(self.rows_classified / max(self.predict_seconds, 1e-9), 1),
            "mean_probability": round(self.probability_sum / self.rows_classified, 4) if self.rows_classified else None,
            "genre_distribution": dict(self.genres.most_common()),
        }


class ChunkWriter:
    """Appends frames to one CSV or Parquet file, the header or schema taken from the first frame."""

    def __init__(self, path: Path) -> None:
        if path.suffix not in OUTPUT_SUFFIXES:
            raise InputFileError(f"{path}: the output must end in .csv or .parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._parquet: pq.ParquetWriter | None = None
        self._started = False

    def write(self, frame: pd.DataFrame) -> None:
        if self.path.suffix == ".csv":
            frame.to_csv(self.path, mode="a" if self._started else "w", header=not self._started, index=False)
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        self._started = True

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()


def default_output(listing: Path, output_dir: Path) -> Path:
    return output_dir / f"{listing.stem}.genres.csv"


def beside(output: Path, suffix: str) -> Path:
    """A file next to the output, named after it: genres.csv -> genres.quarantine.csv."""
    return output.with_name(f"{output.name.rsplit('.', 1)[0]}{suffix}")


def quarantine_path(output: Path) -> Path:
    return beside(output, ".quarantine.csv")


def predicted_rows(kept: pd.DataFrame, model: GenrePredictor, model_version: str) -> pd.DataFrame:
    predicted = model.predict(kept[["title", "author"]].reset_index(drop=True))
    rows = kept[["source_row", "book_id", "title", "author"]].reset_index(drop=True)
    return rows.assign(genre=predicted["genre"].to_numpy(), probability=predicted["probability"].astype(float).to_numpy(),
                       model_version=model_version)[PREDICTION_COLUMNS]


def classify_file(listing: Path, output: Path, model: GenrePredictor, model_version: str, chunk_rows: int,
                  checks: ValidateSettings) -> ClassifyReport:
    """Stream `listing` through validation and `model` into `output` (+ its quarantine file)."""
    if output.resolve() == listing.resolve():
        raise InputFileError(f"{output}: the output would overwrite the listing; choose another -o")
    report = ClassifyReport(str(listing), str(output), str(quarantine_path(output)), model_version)
    writer = ChunkWriter(output)
    quarantine = ChunkWriter(quarantine_path(output))
    quarantine.write(pd.DataFrame(columns=QUARANTINE_COLUMNS))  # the file exists, with its header, even when empty
    started = time.perf_counter()
    try:
        with tqdm(desc=f"classify {listing.name}", unit="rows", unit_scale=True) as progress:
            for chunk in listing_chunks(listing, chunk_rows):
                outcome = validate_unlabeled_listing(chunk, checks)
                if len(outcome.kept):
                    predict_started = time.perf_counter()
                    rows = predicted_rows(outcome.kept, model, model_version)
                    report.predict_seconds += time.perf_counter() - predict_started
                    writer.write(rows)
                    report.genres.update(rows["genre"])
                    report.probability_sum += float(rows["probability"].sum())
                if len(outcome.quarantined):
                    quarantine.write(outcome.quarantined)
                report.rows_in += outcome.rows_in
                report.rows_classified += len(outcome.kept)
                report.rows_quarantined += len(outcome.quarantined)
                report.by_reason.update(outcome.by_reason)
                progress.update(outcome.rows_in)
        if not report.rows_classified:
            writer.write(pd.DataFrame(columns=PREDICTION_COLUMNS))  # a header, so the output still reads as a table
    finally:
        writer.close()
    report.seconds = time.perf_counter() - started
    if report.rows_in != report.rows_classified + report.rows_quarantined:
        raise AssertionError(f"{listing}: {report.rows_in} rows in but {report.rows_classified} classified + "
                             f"{report.rows_quarantined} quarantined")
    return report


def report_markdown(summary: dict[str, object]) -> str:
    """What the Prefect UI shows for a classify run: where the rows went, and the genres most predicted."""
    genres = "\n".join(f"| {genre} | {rows} |" for genre, rows in list(summary["genre_distribution"].items())[:10])
    return (f"# {summary['listing']}\n\n{summary['rows_in']} rows in: **{summary['rows_classified']} classified** into "
            f"`{summary['output']}`, **{summary['rows_quarantined']} quarantined** into `{summary['quarantine']}` "
            f"({json.dumps(summary['quarantined_by_reason'])}), by {summary['model_uri']} (v{summary['model_version']}), "
            f"{summary['rows_per_second']:,.0f} rows/s.\n\n| most predicted genre | rows |\n|---|---|\n{genres}\n")


@task(name="classify-listing", cache_policy=NO_CACHE)
def classify_listing(settings: Settings, listing: Path, output: Path | None = None) -> dict[str, object]:
    """Label a new listing with the classifier champion; write the predictions and the quarantine."""
    if not str(listing).strip():
        raise InputFileError("classify-listing needs `listing`: the path of a CSV on this machine to classify")
    listing, output = Path(listing), Path(output) if output else default_output(Path(listing), settings.classify.output_dir)
    if not listing.is_file():
        raise InputFileError(f"{listing}: file not found; give the path of a listing (CSV) to classify")
    model, model_uri, version = load_champion_classifier(settings)
    report = classify_file(listing, output, model, str(version), settings.classify.chunk_rows, settings.validate_)
    summary = {**report.summary(), "model_uri": model_uri}
    summary_file = beside(output, ".summary.json")
    write_json(summary_file, summary)
    summary["mlflow_run_id"] = log_stage_run(
        settings.mlflow.experiment, "classify-listing", {"listing": listing, "output": output},
        {"rows_in": report.rows_in, "rows_classified": report.rows_classified, "rows_quarantined": report.rows_quarantined,
         "rows_per_second": summary["rows_per_second"]},
        [summary_file, quarantine_path(output)],
    )
    log.info("classified %d of %d rows of %s with %s into %s (%d quarantined, see %s); %.0f rows/s",
             report.rows_classified, report.rows_in, listing, model_uri, output, report.rows_quarantined,
             report.quarantine, summary["rows_per_second"])
    return summary
