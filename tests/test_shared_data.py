"""Data tests on the real files of ../shared/data: every file reads, and validation accounts for every row."""

from __future__ import annotations

import pytest
from conftest import SHARED_DATA

from tasks.inputs.readers import read_covers, read_listing
from tasks.inputs.taxonomy import BOOKCOVER30_GENRES
from tasks.inputs.validation import validate_covers, validate_listing
from tasks.platform.settings import ValidateSettings

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not present at {SHARED_DATA}"),
]

LISTINGS = {
    "book30-listing-train-partial.csv": 29_399,
    "book32-listing-extra.csv": 3_732,
    "book32-titles-5genres.csv": 45_688,
}
SETTINGS = ValidateSettings()


@pytest.mark.parametrize("name, rows", LISTINGS.items())
def test_every_listing_file_reads_and_validates_without_losing_rows(name: str, rows: int) -> None:
    frame = read_listing(SHARED_DATA / "amazon-books" / name)
    assert len(frame) == rows
    assert frame["parse_error"].isna().all()
    outcome = validate_listing(frame, SETTINGS)
    assert len(outcome.kept) + len(outcome.quarantined) == rows
    assert len(outcome.quarantined) / rows < 0.05, outcome.by_reason
    assert set(outcome.kept["genre"]) <= set(BOOKCOVER30_GENRES)


def test_latin1_listing_decodes_accented_authors() -> None:
    frame = read_listing(SHARED_DATA / "amazon-books" / "book30-listing-train-partial.csv")
    authors = frame["author"].dropna()
    assert authors.str.contains("é").any()
    assert not authors.str.contains("Ã©").any()  # UTF-8 bytes read as latin-1 would show up like this


def test_book_depository_covers_read_and_validate_without_losing_rows() -> None:
    frame, detected = read_covers(SHARED_DATA / "bookdepository-covers" / "book-covers.csv")
    assert detected == "bookdepository"
    assert len(frame) == 17_630
    outcome = validate_covers(frame, detected, SETTINGS)
    assert len(outcome.kept) + len(outcome.quarantined) == 17_630
    assert len(outcome.quarantined) < 100, outcome.by_reason
    assert outcome.kept["book_id"].nunique() > 12_000
    assert outcome.kept["category"].nunique() == 33
