"""A listing read as a stream of frames, for files too big to hold: memory holds one chunk.

The rows are the ones `read_listing` gives for the same file (same layouts, decoding, line
numbers and parse errors), cut into frames of `chunk_rows`; the readers' row builders are
shared, so the two paths cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pandas as pd

from tasks.inputs.csvtext import head_text, sniff_delimiter, stream_records
from tasks.inputs.readers import (
    HEADED_RECORDS,
    HEADED_REQUIRED,
    LISTING_COLUMNS,
    amazon_record,
    checked_header,
    sniff_listing_format,
)
from tasks.platform.errors import InputFileError


def listing_chunks(path: Path, chunk_rows: int, labeled: bool = False, listing_format: str = "auto") -> Iterator[pd.DataFrame]:
    """Frames of at most `chunk_rows` listing rows, in file order, in the given layout or the sniffed one
    ("auto"). `labeled=False` also reads a headed table with a title and no genre column (a listing to classify)."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    head = head_text(path)
    if listing_format == "auto":
        listing_format = sniff_listing_format(path, head, labeled)
    records = stream_records(path, "," if listing_format == "amazon" else sniff_delimiter(head))
    if listing_format == "amazon":
        make = partial(amazon_record, path)
    else:
        first = next(records, None)
        if first is None:
            raise InputFileError(f"{path}: no rows at all; point at a listing with rows")
        header = checked_header(path, first[1], HEADED_REQUIRED[listing_format])
        make = partial(HEADED_RECORDS[listing_format], path, header)
    batch: list[dict[str, object]] = []
    rows = 0
    for number, row in records:
        batch.append(make(number, row))
        if len(batch) == chunk_rows:
            rows += len(batch)
            yield pd.DataFrame.from_records(batch, columns=LISTING_COLUMNS)
            batch = []
    if batch:
        yield pd.DataFrame.from_records(batch, columns=LISTING_COLUMNS)
    elif not rows:
        raise InputFileError(f"{path}: a header but no data rows; add rows")
