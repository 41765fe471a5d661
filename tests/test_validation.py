from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tasks.inputs.outcomes import enforce_threshold
from tasks.inputs.validation import validate_and_clean, validate_covers, validate_listing
from tasks.platform.errors import DataQualityError
from tasks.platform.settings import Settings, ValidateSettings

SETTINGS = ValidateSettings(title_max_chars=50, min_rows_per_genre=1)


def listing(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["book_id", "title", "author", "genre"])
    frame.insert(0, "source_file", "listing.csv")
    frame.insert(1, "source_row", range(1, len(frame) + 1))
    frame["parse_error"] = None
    return frame


def reasons(outcome) -> dict[int, str]:
    return dict(zip(outcome.quarantined["source_row"], outcome.quarantined["reason"]))


def test_listing_rows_are_kept_or_quarantined_with_a_reason() -> None:
    frame = listing([
        ("1", "Rick Steves Paris 2016", "Rick Steves", "Travel"),
        ("2", None, "Nobody", "Travel"),
        ("3", "A Title", "Someone", "Cooking Stuff"),
        ("4", "x" * 51, "Someone", "History"),
        ("1", "Rick Steves Paris 2016 again", "Rick Steves", "Travel"),
        ("5", "Conflicted", "A", "History"),
        ("5", "Conflicted", "A", "Romance"),
        ("6", "Rick  steves PARIS 2016", "rick steves", "Travel"),
        (None, "No id", "A", "History"),
    ])
    frame.loc[len(frame)] = ["listing.csv", 10, None, None, None, None, "wrong_column_count:4!=7"]
    outcome = validate_listing(frame, SETTINGS)
    assert len(outcome.kept) + len(outcome.quarantined) == len(frame) == outcome.rows_in
    assert outcome.kept["book_id"].tolist() == ["1"]
    got = reasons(outcome)
    assert got[2] == "title_empty"
    assert got[3] == "genre_unknown"
    assert got[4] == "title_too_long"
    assert got[5] == "duplicate_book_id"
    assert got[6] == got[7] == "conflicting_genre"
    assert got[8] == "duplicate_title"
    assert got[9] == "book_id_missing"
    assert "unparseable_row" in got[10]
    assert outcome.by_reason["conflicting_genre"] == 2


def test_a_broken_row_does_not_knock_out_its_good_duplicate() -> None:
    outcome = validate_listing(listing([("1", None, "A", "Travel"), ("1", "Good title", "A", "Travel")]), SETTINGS)
    assert outcome.kept["title"].tolist() == ["Good title"]
    assert reasons(outcome) == {1: "title_empty"}


def test_missing_author_is_kept_as_empty_string() -> None:
    outcome = validate_listing(listing([("1", "Title", None, "Travel")]), SETTINGS)
    assert outcome.kept.loc[0, "author"] == ""


def covers_frame(root: Path, refs: list[str | None], categories: list[str] | None = None) -> pd.DataFrame:
    n = len(refs)
    return pd.DataFrame({
        "source_file": "book-covers.csv", "source_row": range(2, n + 2),
        "book_id": [f"978{i:010d}" for i in range(n)], "title": [f"Title {i}" for i in range(n)],
        "author": "A", "category": categories or ["Romance"] * n, "image_ref": refs,
        "image_root": str(root), "parse_error": None,
    })


def test_cover_files_are_checked_for_existence_decoding_size_and_root(tmp_path: Path) -> None:
    root = tmp_path / "covers"
    root.mkdir()
    Image.new("RGB", (60, 90), "red").save(root / "good.jpg")
    Image.new("RGB", (60, 90), "blue").save(root / "png named.jpg", format="PNG")
    Image.new("RGB", (8, 8)).save(root / "tiny.jpg")
    (root / "truncated.jpg").write_bytes((root / "good.jpg").read_bytes()[:200])
    (root / "empty.jpg").write_bytes(b"")
    Image.new("RGB", (60, 90)).save(tmp_path / "outside.jpg")
    (root / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    refs = ["good.jpg", "png named.jpg", "tiny.jpg", "truncated.jpg", "empty.jpg", "missing.jpg",
            "../outside.jpg", "link.jpg", str(tmp_path / "outside.jpg"), None]
    frame = covers_frame(root, refs)
    outcome = validate_covers(frame, "bookdepository", SETTINGS)
    assert len(outcome.kept) + len(outcome.quarantined) == len(frame)
    assert outcome.kept["title"].tolist() == ["Title 0", "Title 1"]
    assert outcome.kept.loc[0, "image_path"].endswith("good.jpg")
    got = reasons(outcome)
    assert got[4] == "image_too_small"
    assert got[5] == got[6] == "image_undecodable"
    assert got[7] == "image_missing"
    assert got[8] == got[9] == got[10] == "image_outside_root"
    assert got[11] == "image_path_missing"


def test_unknown_category_and_same_book_in_two_categories(tmp_path: Path) -> None:
    Image.new("RGB", (60, 90)).save(tmp_path / "a.jpg")
    frame = covers_frame(tmp_path, ["a.jpg"] * 3, ["Romance", "Travel-Holiday-Guides", "Knitting"])
    frame["book_id"] = "9780000000001"
    outcome = validate_covers(frame, "bookdepository", SETTINGS)
    assert sorted(outcome.kept["category"]) == ["Romance", "Travel-Holiday-Guides"]
    assert reasons(outcome) == {4: "category_unknown"}


def test_threshold_stops_the_stage_with_a_clear_message() -> None:
    outcome = validate_listing(listing([("1", None, "A", "Travel"), ("2", "Fine", "A", "Travel")]), SETTINGS)
    with pytest.raises(DataQualityError, match=r"1 of 2 rows quarantined .*max_quarantine_fraction.*title_empty"):
        enforce_threshold([outcome], 0.2, Path("summary.md"))
    enforce_threshold([outcome], 0.5, Path("summary.md"))


def test_stage_writes_clean_parquet_quarantine_and_metrics(tiny_settings: Settings) -> None:
    metrics = validate_and_clean.fn(tiny_settings)
    paths = tiny_settings.paths
    listing_out = pd.read_parquet(paths.clean_listing)
    covers_out = pd.read_parquet(paths.clean_covers)
    quarantine = pd.read_parquet(paths.quarantine)
    assert metrics["listing"]["rows_in"] == 600 == len(listing_out) + (quarantine["table"] == "listing").sum()
    assert metrics["covers"]["rows_kept"] == len(covers_out) > 0
    assert set(covers_out.columns) == {"book_id", "title", "author", "category", "image_path"}
    assert all(Path(p).is_file() for p in covers_out["image_path"])
    saved = json.loads((paths.metrics_dir / "validation.json").read_text())
    assert saved["listing"] == metrics["listing"] and saved["covers"] == metrics["covers"]
    assert paths.quarantine_summary.read_text().startswith("# Quarantine summary")
    from tasks.platform.tracking import client

    logged = {artifact.path for artifact in client().list_artifacts(metrics["mlflow_run_id"])}
    assert {paths.quarantine.name, paths.quarantine_summary.name, "validation.json"} <= logged


def test_a_table_without_a_required_column_stops_with_a_clear_error() -> None:
    frame = listing([("1", "Title", "A", "Travel")]).drop(columns=["genre"])
    with pytest.raises(DataQualityError, match="columns_missing"):
        validate_listing(frame, SETTINGS)


def test_an_authorless_row_repeating_an_authored_title_is_a_duplicate() -> None:
    """The Category,Title table re-lists Amazon books without author: keeping both leaks train into test."""
    outcome = validate_listing(listing([
        ("t1", "Rick Steves' Paris 2016", None, "Travel"),
        ("B01", "Rick Steves Paris 2016", "Rick Steves", "Travel"),
        ("t2", "Lonely Planet Rome", None, "Travel"),
        ("t3", "lonely planet: ROME", None, "Travel"),
        ("B02", "Home", "Author One", "Romance"),
        ("B03", "Home", "Author Two", "Romance"),
    ]), SETTINGS)
    assert sorted(outcome.kept["book_id"]) == ["B01", "B02", "B03", "t2"]
    assert reasons(outcome) == {1: "duplicate_title", 4: "duplicate_title"}


def test_genres_too_rare_to_cross_validate_are_quarantined() -> None:
    rows = [(str(i), f"Travel book {i}", "A", "Travel") for i in range(5)] + [("x", "Lone romance", "B", "Romance")]
    outcome = validate_listing(listing(rows), ValidateSettings(min_rows_per_genre=3))
    assert set(outcome.kept["genre"]) == {"Travel"}
    assert reasons(outcome) == {6: "genre_too_rare"}


def test_quarantine_summary_lists_each_reason_with_example_rows() -> None:
    from tasks.inputs.outcomes import quarantine_summary

    outcome = validate_listing(listing([("1", "A", "x", "Travel"), ("1", "B", "x", "Travel"), ("2", None, "y", "Travel")]), SETTINGS)
    summary = quarantine_summary([outcome])
    assert "## listing: 3 rows in, 1 kept, 2 quarantined" in summary
    assert "| title_empty | 1 | listing.csv:3 |" in summary
    assert "| duplicate_book_id | 1 | listing.csv:2 |" in summary
