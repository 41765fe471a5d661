"""`bookcovers classify`: a new listing streamed through the listing checks and the classifier champion.

Held here: the streamed rows are the rows `read_listing` gives (every case of the bad-input
corpus); every case classifies without a crash and without losing a row; the output does not
depend on the chunk size; CSV and Parquet outputs carry genre, probability, model version and the
input row; a missing file or a bad output name is one clear line.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest
from bad_inputs import LISTING_CASES, LISTING_CSV, Case

from flows.bookcovers import main
from tasks.genre.batch import PREDICTION_COLUMNS, classify_file, quarantine_path
from tasks.genre.features import FeatureBlocks
from tasks.genre.models import GenreModel, candidate_specs
from tasks.genre.pyfunc import GenreClassifierModel, classifier_frame
from tasks.inputs.readers import read_listing
from tasks.inputs.stream import listing_chunks
from tasks.platform.errors import InputFileError
from tasks.platform.settings import ClassifierSettings, ValidateSettings

CHECKS = ValidateSettings()
# A listing to classify needs no genre column: the one layout refused for training is read here.
READ_ONLY_WHEN_UNLABELED = {"missing columns (no category or genre)"}
WORDS = {"Travel": ["Rome", "Paris", "walking", "guide"], "History": ["war", "empire", "ancient", "kings"],
         "Cookbooks, Food & Wine": ["bread", "soup", "recipes", "baking"]}


class Pyfunc:
    """What mlflow.pyfunc.load_model returns, minus MLflow."""

    def __init__(self, python_model: GenreClassifierModel) -> None:
        self.python_model = python_model

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.python_model.predict(None, frame)


@pytest.fixture(scope="module")
def model() -> Pyfunc:
    frame = pd.DataFrame([{"title": f"{a} {b}", "author": "", "genre": genre}
                          for genre, words in WORDS.items() for a, b in itertools.permutations(words, 2)])
    settings = ClassifierSettings()
    spec = candidate_specs(settings)["logistic_regression"]
    blocks, _ = FeatureBlocks.fit(classifier_frame(frame), spec.blocks, settings)
    estimator = spec.build(spec.grid[0], settings).fit(blocks.transform(classifier_frame(frame)), frame["genre"])
    return Pyfunc(GenreClassifierModel(GenreModel(spec.name, blocks, estimator, estimator.classes_, temperature=1.0)))


def built(case: Case, tmp_path: Path) -> Path:
    case.build(tmp_path / "data")
    return tmp_path / "data" / LISTING_CSV


@pytest.mark.parametrize("case", LISTING_CASES, ids=[case.name for case in LISTING_CASES])
def test_streamed_chunks_are_the_rows_read_listing_gives(case: Case, tmp_path: Path) -> None:
    path = built(case, tmp_path)
    try:
        whole = read_listing(path)
    except InputFileError as error:
        with pytest.raises(InputFileError) as streamed_error:
            list(listing_chunks(path, 2, labeled=True))
        assert str(streamed_error.value).split(":")[0] == str(error).split(":")[0] == str(path)
        return
    streamed = pd.concat(list(listing_chunks(path, 2, labeled=True)), ignore_index=True)
    pd.testing.assert_frame_equal(as_values(streamed), as_values(whole))


def as_values(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as Python values, missing ones as None: chunks infer their own column dtypes."""
    return frame.astype(object).where(frame.notna(), None)


@pytest.mark.parametrize("case", LISTING_CASES, ids=[case.name for case in LISTING_CASES])
def test_every_bad_input_classifies_without_a_crash_or_a_lost_row(case: Case, tmp_path: Path, model: Pyfunc) -> None:
    path, output = built(case, tmp_path), tmp_path / "out" / "genres.csv"
    if case.expect == "refused" and case.name not in READ_ONLY_WHEN_UNLABELED:
        with pytest.raises(InputFileError, match=case.message) as refused:
            classify_file(path, output, model, "7", 3, CHECKS)
        assert "\n" not in str(refused.value)
        return
    report = classify_file(path, output, model, "7", 3, CHECKS)
    predicted, quarantined = pd.read_csv(output), pd.read_csv(quarantine_path(output))
    assert report.rows_in == len(predicted) + len(quarantined) == report.rows_classified + report.rows_quarantined > 0
    assert list(predicted.columns) == PREDICTION_COLUMNS
    assert set(predicted["genre"]) <= set(WORDS) and predicted["probability"].between(0, 1).all()
    assert (predicted["model_version"] == 7).all()
    assert quarantined["reason"].notna().all()
    assert not {"genre_missing", "genre_unknown", "duplicate_book_id"} & set(";".join(quarantined["reason"]).split(";"))
    if case.expect in {"title_empty", "title_too_long", "formula_like_cell", "unparseable_row", "book_id_missing"}:
        assert case.expect in ";".join(quarantined["reason"])


def test_the_output_does_not_depend_on_the_chunk_size_and_parquet_matches_csv(tmp_path: Path, model: Pyfunc) -> None:
    rows = [(f"B{i}", f"{WORDS[genre][i % 4]} {WORDS[genre][(i + 1) % 4]}", "Ann", "") for i, genre in
            zip(range(40), itertools.cycle(WORDS))]
    rows[5] = ("B5", "=cmd|' /C calc'!A0", "Ann", "")
    listing = tmp_path / "new.csv"
    pd.DataFrame(rows, columns=["id", "title", "author", "note"]).to_csv(listing, index=False)
    one = classify_file(listing, tmp_path / "one.csv", model, "1", 1000, CHECKS)
    small = classify_file(listing, tmp_path / "small.parquet", model, "1", 3, CHECKS)
    by_csv, by_parquet = pd.read_csv(tmp_path / "one.csv", dtype={"model_version": str}), pd.read_parquet(tmp_path / "small.parquet")
    pd.testing.assert_frame_equal(by_csv, by_parquet, check_dtype=False)
    assert (one.rows_in, one.rows_classified, one.rows_quarantined) == (small.rows_in, small.rows_classified, small.rows_quarantined) == (40, 39, 1)
    assert by_csv["source_row"].tolist() == [row for row in range(2, 42) if row != 7]  # the file's lines: header is line 1
    assert by_csv.loc[by_csv["book_id"] == "B0", "genre"].item() == "Travel"


def test_an_output_that_would_overwrite_the_listing_or_has_no_known_suffix_is_refused(tmp_path: Path, model: Pyfunc) -> None:
    listing = tmp_path / "new.csv"
    listing.write_text("title\nRome walking\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="overwrite"):
        classify_file(listing, listing, model, "1", 10, CHECKS)
    with pytest.raises(InputFileError, match=".csv or .parquet"):
        classify_file(listing, tmp_path / "out.xlsx", model, "1", 10, CHECKS)


def test_classify_names_a_missing_listing_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--params", str(tmp_path / "params.yaml"), "classify", str(tmp_path / "nowhere.csv")])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip()
    assert "nowhere.csv: no such file" in error and "\n" not in error
