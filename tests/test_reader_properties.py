"""Property-based tests: whatever bytes a user's listing or cover table holds, the readers
return one row per record with the same columns, or refuse the file with an InputFileError;
they never crash with anything else."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tasks.inputs.readers import COVER_COLUMNS, LISTING_COLUMNS, decode_bytes, read_covers, read_listing
from tasks.platform.errors import InputFileError

# Derandomized: CI sees the same examples every run. To explore further, run with
# HYPOTHESIS_PROFILE=explore (many more random examples).
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROPERTY_SETTINGS = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
CSV_ALPHABET = st.sampled_from(list('abcé,;"\t|\n\r\x00 =@+-') + ["title", "category", "genre", "author", "image", "name"])
csv_like_bytes = st.lists(CSV_ALPHABET, max_size=80).map(lambda parts: "".join(parts).encode("utf-8"))
any_bytes = st.one_of(st.binary(max_size=400), csv_like_bytes)


def written(data: bytes) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="prop-"))
    path = folder / "input.csv"
    path.write_bytes(data)
    return path


@PROPERTY_SETTINGS
@given(any_bytes, st.sampled_from(["auto", "amazon", "category_title", "generic"]))
def test_any_bytes_give_rows_or_a_clear_refusal_for_listings(data: bytes, listing_format: str) -> None:
    path = written(data)
    try:
        frame = read_listing(path, listing_format)
    except InputFileError as error:
        assert str(path) in str(error) and "\n" not in str(error)
        return
    assert list(frame.columns) == LISTING_COLUMNS
    assert frame["source_row"].is_monotonic_increasing and (frame["source_row"] >= 1).all()
    assert (frame["source_file"] == str(path)).all()


@PROPERTY_SETTINGS
@given(any_bytes, st.sampled_from(["auto", "bookdepository", "generic"]))
def test_any_bytes_give_rows_or_a_clear_refusal_for_cover_tables(data: bytes, covers_format: str) -> None:
    path = written(data)
    try:
        frame, _ = read_covers(path, covers_format)
    except InputFileError as error:
        assert str(path) in str(error) and "\n" not in str(error)
        return
    assert list(frame.columns) == COVER_COLUMNS


@PROPERTY_SETTINGS
@given(st.lists(st.lists(st.text(max_size=12), min_size=7, max_size=7), min_size=1, max_size=20))
@example([["", "", "", "", "", "¹", ""]])  # a Unicode digit that int() refuses (found by hypothesis)
def test_every_record_of_a_book32_listing_comes_back_as_one_row(rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    path = written(buffer.getvalue().encode("utf-8"))
    try:
        frame = read_listing(path, "amazon")
    except InputFileError:
        assert not buffer.getvalue().replace("\x00", "").strip(), "only an empty file may be refused"
        return
    # Records whose cells are all blank are blank lines, not rows; every other record is a row.
    records = [row for row in rows if any(cell.replace("\x00", "").strip() for cell in row)]
    assert len(frame) == len(records)
    clean = frame["parse_error"].isna()
    assert frame.loc[clean, "source_row"].notna().all()


@PROPERTY_SETTINGS
@given(st.binary(max_size=300))
def test_decoding_never_fails_and_keeps_valid_utf8(data: bytes) -> None:
    decoded = decode_bytes(data)
    try:
        assert decoded.text == data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError:
        assert decoded.encoding != "utf-8"
