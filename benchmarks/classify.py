"""Throughput and memory of `bookcovers classify` on big generated listings (`make bench-classify`).

Run after `make run` (or any train_classifier stage). Writes listings of `--rows` rows and of
twice as many (title, author, id in the generic CSV layout, drawn with replacement from the
project's cleaned listing, one row in 1,000 given an over-long title so the quarantine path runs
too), then classifies each with the registered champion exactly as the command does: streamed in
classify.chunk_rows chunks, validated, predicted, written. Printed: rows/s end to end and while
predicting (target >= 20,000 on 2 cores), and the peak RSS (process tree) for both sizes: memory
bounded by the chunk, not the file, shows as the same peak at both sizes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

TARGET = 20_000


def write_listing(path: Path, source: pd.DataFrame, rows: int, seed: int) -> None:
    """`rows` rows in the generic layout, written in blocks so the benchmark itself stays small."""
    rng = np.random.default_rng(seed)
    block = 200_000
    for start in range(0, rows, block):
        sample = source.iloc[rng.integers(0, len(source), min(block, rows - start))]
        titles = sample["title"].to_numpy(dtype=object).copy()
        titles[::1000] = "x" * 5000  # title_too_long: the quarantine path in every chunk
        frame = pd.DataFrame({"id": np.arange(start, start + len(sample)), "title": titles, "author": sample["author"].to_numpy()})
        frame.to_csv(path, mode="a" if start else "w", header=start == 0, index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("override", nargs="*", help="params overrides, section.key=value")
    args = parser.parse_args(argv)

    from benchmarks.classifier import PeakMemory
    from tasks.genre.batch import classify_file
    from tasks.genre.labeling import load_champion_classifier
    from tasks.platform.settings import load_settings

    settings = load_settings(Path("params.yaml"), args.override)
    if not settings.paths.clean_listing.is_file():
        print(f"{settings.paths.clean_listing} not found: run `make run` (or the validate stage) first")
        return 2
    model, uri, version = load_champion_classifier(settings)
    source = pd.read_parquet(settings.paths.clean_listing, columns=["title", "author"])
    model.predict(source.head(100))  # warm-up: lazy imports, the first tokenizer call
    print(f"classify benchmark: {os.cpu_count()} cores, {uri} (v{version}), chunks of {settings.classify.chunk_rows:,} rows")
    with tempfile.TemporaryDirectory(prefix="bench-classify-") as work:
        for rows in (args.rows, 2 * args.rows):
            listing = Path(work) / f"listing-{rows}.csv"
            write_listing(listing, source, rows, seed=rows)
            with PeakMemory() as memory:
                report = classify_file(listing, Path(work) / f"out-{rows}.parquet", model, str(version),
                                       settings.classify.chunk_rows, settings.validate_)
            summary = report.summary()
            print(f"  {rows:>10,} rows ({listing.stat().st_size / 2**20:,.0f} MiB): {summary['rows_per_second']:9,.0f} rows/s end to "
                  f"end (ratio to the 20,000 target {summary['rows_per_second'] / TARGET:.2f}), "
                  f"{summary['titles_per_second_predicting']:9,.0f} titles/s predicting; peak RSS {memory.peak / 2**30:.2f} GiB; "
                  f"{report.rows_classified:,} classified + {report.rows_quarantined:,} quarantined")
    return 0


if __name__ == "__main__":
    sys.exit(main())
