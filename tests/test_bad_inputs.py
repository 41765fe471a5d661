"""Every case of the bad-input corpus (tests/bad_inputs.py) through the real readers and GX validation.

Asserted for every case: rows in = rows kept + rows quarantined; the defective rows carry the
expected machine-readable reason and every healthy row is kept; a file-level defect stops
with one sentence that names the file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import ALL_CASES, COVERS_CSV, GOOD_COVERS, GOOD_LISTING, LISTING_CSV, Case
from conftest import PROJECT_ROOT

from tasks.inputs.outcomes import TableOutcome
from tasks.inputs.readers import read_covers, read_listings
from tasks.inputs.validation import validate_covers, validate_listing
from tasks.platform.errors import InputFileError
from tasks.platform.settings import ValidateSettings

SETTINGS = ValidateSettings(min_rows_per_genre=1, min_image_side=8, max_image_pixels=40_000_000)


def validated(case: Case, root: Path) -> TableOutcome:
    if case.table == "listing":
        return validate_listing(read_listings(root, ["listings/*.csv"]), SETTINGS)
    frame, covers_format = read_covers(root / COVERS_CSV)
    return validate_covers(frame, covers_format, SETTINGS)


def test_the_corpus_has_at_least_25_distinct_kinds() -> None:
    names = [case.name for case in ALL_CASES]
    assert len(set(names)) == len(names) >= 25
    assert {case.expect for case in ALL_CASES} >= {"kept", "refused", "image_undecodable", "image_outside_root", "title_too_long"}


@pytest.mark.parametrize("case", ALL_CASES, ids=[case.name for case in ALL_CASES])
def test_bad_input_is_quarantined_kept_or_refused_clearly(case: Case, tmp_path: Path) -> None:
    root = tmp_path / "data"
    case.build(root)
    if case.expect == "refused":
        with pytest.raises(InputFileError) as refused:
            validated(case, root)
        message = str(refused.value)
        assert case.message in message and "\n" not in message
        assert Path(LISTING_CSV if case.table == "listing" else COVERS_CSV).name in message
        return
    outcome = validated(case, root)
    healthy = len(GOOD_LISTING if case.table == "listing" else GOOD_COVERS)
    assert outcome.rows_in == len(outcome.kept) + len(outcome.quarantined) == healthy + case.bad_rows
    if case.expect == "kept":
        assert outcome.quarantined.empty, outcome.quarantined[["reason", "detail"]].to_dict("records")
        if case.check_kept is not None:
            case.check_kept(root / "covers" / "img" / _only_odd_image(outcome), outcome)
        return
    assert len(outcome.kept) == healthy
    assert len(outcome.quarantined) == case.bad_rows
    for reasons in outcome.quarantined["reason"]:
        assert case.expect in reasons.split(";"), reasons
    assert outcome.by_reason[case.expect] == case.bad_rows


def _only_odd_image(outcome: TableOutcome) -> str:
    odd = outcome.kept[outcome.kept["title"] == "Odd Cover"]
    return Path(odd["image_path"].iloc[0]).name


def test_kept_text_is_decoded_and_cleaned(tmp_path: Path) -> None:
    by_name = {case.name: case for case in ALL_CASES}
    expectations = {
        "latin-1 listing": ("Café in Rome", "José Núñez"),
        "UTF-8 with BOM": ("Étude in Rome", "Zoë"),
        "invalid UTF-8 bytes on one line": ("Café Rome", "Someone"),
        "NUL byte inside a title": ("Walking Rome", "Someone"),
        "NaN author": ("Walking Rome", ""),
        "CRLF line endings": ("Walking Rome", "Someone"),
        "semicolon-delimited table with a header": ("Walking Rome", "Someone"),
    }
    for name, (title, author) in expectations.items():
        root = tmp_path / name.replace(" ", "_")
        by_name[name].build(root)
        kept = validated(by_name[name], root).kept
        row = kept[kept["title"] == title]
        assert len(row) == 1, (name, kept["title"].tolist())
        assert row["author"].iloc[0] == author, name


def test_quarantine_detail_says_what_was_wrong(tmp_path: Path) -> None:
    by_name = {case.name: case for case in ALL_CASES}
    details = {
        "unbalanced quote swallowing the next lines": "spans 2 lines",
        "extra column in a row": "wrong_column_count:8!=7",
        "30,000 x 30,000 image": "30000x30000 exceeds",
        "truncated JPEG": "OSError",
    }
    for name, fragment in details.items():
        root = tmp_path / name.replace(" ", "_").replace(",", "")
        by_name[name].build(root)
        detail = validated(by_name[name], root).quarantined["detail"].iloc[0]
        assert fragment in str(detail), (name, detail)


def test_a_refused_file_ends_the_stage_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    root = tmp_path / "data"
    next(case for case in ALL_CASES if case.name == "header-only file").build(root)
    result = subprocess.run(
        [sys.executable, "-m", "flows.validate", f"data.root={root}", "data.listings=[listings/*.csv]",
         f"data.covers={COVERS_CSV}", f"paths.metrics_dir={tmp_path / 'metrics'}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "listing.csv: a header but no data rows" in error_lines[0]
    assert "Traceback" not in result.stderr
