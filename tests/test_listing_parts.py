"""A listing validated in parts gives the rows, reasons and files that validating it whole gives.

The messy listing below spreads every kind of repeat across parts and files: one book id in two
parts, one id with two genres far apart, the same title and author under two ids, a title without
author repeating an authored one from the other file, a genre too rare, and broken rows.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.inputs.listing_parts import listing_frames, validate_listing_parts
from tasks.inputs.outcomes import PartedOutcome, TableOutcome, quarantine_summary
from tasks.inputs.readers import read_listings
from tasks.inputs.validation import validate_and_clean, validate_listing, validate_listing_files
from tasks.platform.engine import IN_PROCESS
from tasks.platform.sections import EngineSettings
from tasks.platform.settings import Settings, ValidateSettings, load_settings

GENRES = ["Travel", "History", "Romance", "Science & Math", "Cookbooks, Food & Wine"]
RARE_GENRE = "Calendars"
SETTINGS = ValidateSettings(min_rows_per_genre=3, title_max_chars=60)
PART_ROWS = 61  # the 560 rows below make 10 parts, the last partial, one spanning the two files


def _messy_rows(rng: np.random.Generator, rows: int) -> list[list[str]]:
    titles = [f"Book number {n}" for n in range(220)]
    authors = [f"Author {n}" for n in range(40)]
    genre_of = {n: GENRES[n % len(GENRES)] for n in range(400)}
    out = []
    for _ in range(rows):
        book = int(rng.integers(0, 400))
        title = titles[int(rng.integers(0, len(titles)))]
        out.append([f"B{book:04d}", title.upper() if rng.random() < 0.1 else title, authors[book % 40], genre_of[book]])
    out[5][3], out[400][3] = "Travel", "History"  # one id, two genres, parts apart
    out[400][0] = out[5][0]
    out[12][1:3] = ["=HYPERLINK(\"x\")", "Evil"]
    out[33][1], out[44][3], out[55][3], out[66][1] = "", "", "Knitting", "x" * 61
    out[70][0], out[300][0] = "RARE1", "RARE2"
    out[70][3] = out[300][3] = RARE_GENRE
    return out


def write_messy_listing(folder: Path) -> list[Path]:
    """Two listing files, 560 rows in all: a headed book table and a Category,Title table."""
    rows = _messy_rows(np.random.default_rng(7), 480)
    with (folder / "a_books.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["book_id", "title", "author", "genre"])
        writer.writerows(rows)
    with (folder / "b_category_title.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Category", "Title"])
        writer.writerows([[GENRES[n % len(GENRES)], f"Book number {n * 3}"] for n in range(80)])
    return _paths(folder)


@pytest.fixture(scope="module")
def listing_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("messy-listing")
    write_messy_listing(folder)
    return folder


def _paths(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.csv"))


def _frames(outcome: PartedOutcome | TableOutcome) -> tuple[pd.DataFrame, pd.DataFrame]:
    kept = pd.concat(list(outcome.kept_frames()), ignore_index=True)
    quarantined = pd.concat(list(outcome.quarantined_frames()), ignore_index=True)
    return kept.astype(object), quarantined.astype(object).where(quarantined.notna(), None)


def assert_same_outcome(whole: TableOutcome, parted: PartedOutcome) -> None:
    assert isinstance(parted, PartedOutcome)
    assert (parted.rows_in, parted.rows_kept, parted.rows_quarantined) == (whole.rows_in, whole.rows_kept, whole.rows_quarantined)
    assert parted.by_reason == whole.by_reason
    for got, expected in zip(_frames(parted), _frames(whole)):
        pd.testing.assert_frame_equal(got, expected)
    assert quarantine_summary([parted]) == quarantine_summary([whole])


def test_parts_are_the_listing_rows_in_order_and_may_span_files(listing_dir: Path) -> None:
    frames = list(listing_frames(_paths(listing_dir), "auto", PART_ROWS))
    assert [len(frame) for frame in frames] == [PART_ROWS] * 9 + [560 - 9 * PART_ROWS]
    spanning = frames[480 // PART_ROWS]
    assert spanning["source_file"].nunique() == 2
    whole = read_listings(listing_dir, ["*.csv"])
    streamed = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(streamed.astype(object).where(streamed.notna(), None),
                                  whole.astype(object).where(whole.notna(), None))


def test_the_messy_listing_has_every_kind_of_repeat(listing_dir: Path) -> None:
    whole = validate_listing(read_listings(listing_dir, ["*.csv"]), SETTINGS)
    expected = {"conflicting_genre", "duplicate_book_id", "duplicate_title", "genre_too_rare", "formula_like_cell",
                "title_empty", "genre_missing", "genre_unknown", "title_too_long"}
    assert expected <= set(whole.by_reason), whole.by_reason
    assert whole.by_reason["duplicate_title"] > 10, "titles without author repeat authored ones across the two files"


def test_in_parts_the_listing_keeps_and_quarantines_the_same_rows(listing_dir: Path, tmp_path: Path) -> None:
    whole = validate_listing(read_listings(listing_dir, ["*.csv"]), SETTINGS)
    parted = validate_listing_parts(listing_frames(_paths(listing_dir), "auto", PART_ROWS), SETTINGS, IN_PROCESS, None, tmp_path)
    assert len(parted.kept_parts) == len(parted.quarantine_parts) == 10
    assert_same_outcome(whole, parted)


def test_a_listing_of_one_part_is_validated_in_memory(listing_dir: Path, tmp_path: Path) -> None:
    outcome = validate_listing_files(_paths(listing_dir), "auto", SETTINGS, EngineSettings(kind="none", chunk_rows=1000),
                                     None, tmp_path)
    assert isinstance(outcome, TableOutcome) and outcome.rows_in == 560
    assert not any(tmp_path.iterdir()), "nothing written beside the stage when the listing fits in one part"


@pytest.fixture()
def stage_outputs(tiny_settings: Settings, project_dir: Path) -> Iterator[Callable[[int], dict[str, object]]]:
    def run(chunk_rows: int) -> dict[str, object]:
        settings = load_settings(project_dir / "params.yaml", [f"data.root={tiny_settings.data.root}",
                                                                "engine.kind=none", f"engine.chunk_rows={chunk_rows}"])
        metrics = validate_and_clean.fn(settings)
        paths = settings.paths
        leftovers = [p for p in paths.quarantine.parent.iterdir() if p.name.startswith(".parts-")]
        assert not leftovers, "the stage removes its parts"
        return {"metrics": {k: metrics[k] for k in ("listing", "covers")},
                "listing": pd.read_parquet(paths.clean_listing), "quarantine": pd.read_parquet(paths.quarantine),
                "summary": paths.quarantine_summary.read_text()}
    yield run


def test_the_stage_writes_the_same_files_whole_or_in_parts(stage_outputs) -> None:
    whole, parted = stage_outputs(100_000), stage_outputs(97)
    assert whole["metrics"] == parted["metrics"] and whole["metrics"]["listing"]["rows_in"] == 600
    pd.testing.assert_frame_equal(whole["listing"], parted["listing"])
    pd.testing.assert_frame_equal(whole["quarantine"], parted["quarantine"])
    assert whole["summary"] == parted["summary"]
