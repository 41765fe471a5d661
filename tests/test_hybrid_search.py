"""The hybrid cover search on an index of generated covers that print their titles: a title finds its
cover by the read text, an uploaded cover is identified as its book (CLI, API), each result says what
found it, and `search --batch` answers files of title or cover queries, bad rows with their reasons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_add_covers import generated_books, write_tiny_index

from flows.bookcovers import main
from tasks.platform.engine import IN_PROCESS
from tasks.platform.sections import HybridSettings, ReadingSettings
from tasks.reading.fusion import fused
from tasks.reading.stage import read_images
from tasks.search.app import create_app
from tasks.search.batch import OUTPUT_COLUMNS, read_batch, search_batch
from tasks.search.engine import CoverSearch
from tasks.search.hybrid import fused_candidates
from tasks.search.vectors import ExactVectors

GENRES = ["Travel", "History", "Romance"]


class Pipeline:
    classes_ = np.array(GENRES)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.array([[0.6, 0.3, 0.1] if "paris" in t.lower() else [0.2, 0.5, 0.3] for t in frame["title"]])


class Classifier:
    """Stands in for the champion: its registered answer and the full distribution behind it."""

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        probabilities = Pipeline().predict_proba(frame)
        return pd.DataFrame({"genre": np.array(GENRES)[probabilities.argmax(1)], "probability": probabilities.max(1)})

    def unwrap_python_model(self) -> object:
        return type("Wrapped", (), {"pipeline": Pipeline()})()


@pytest.fixture(scope="module")
def hybrid_index(tmp_path_factory: pytest.TempPathFactory, tiny_data) -> Path:
    """24 generated covers, read by the real reader, embedded by a tiny random-init CLIP (which knows nothing)."""
    folder = tmp_path_factory.mktemp("hybrid") / "cover_index"
    books = generated_books(tiny_data, 24)
    books["read_text"] = read_images(books["image_path"].tolist(), ReadingSettings(), IN_PROCESS)["text"]
    summary = write_tiny_index(folder, books, "1")
    summary["fusion"] = {"title_to_cover": 0.8, "cover_to_title": 0.8, "genre": 0.5}
    summary["reading"] = ReadingSettings().model_dump()
    (folder / "index.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture(scope="module")
def search(hybrid_index: Path) -> CoverSearch:
    return CoverSearch(
        hybrid_index,
        Classifier(),
        "a book cover of {category}",
        low_confidence_below=0.3,
        hybrid=HybridSettings(identify_min_score=0.4, identify_margin=0.05),
    )


def test_most_generated_covers_are_read(search: CoverSearch) -> None:
    assert (search.books["read_text"] != "").mean() >= 0.9
    assert search.info["covers_with_read_text"] == int((search.books["read_text"] != "").sum())


def test_a_title_finds_its_cover_by_the_read_text(search: CoverSearch) -> None:
    found = 0
    for row in range(len(search.books)):
        hits = search.by_title(search.books["title"][row], k=3).hits
        found += hits[0].row == row
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(h.matched in {"read text", "CLIP", "read text + CLIP", "fused"} for h in hits)
    assert found / len(search.books) >= 0.8  # the tiny CLIP alone is at chance (1/24)
    hit = search.by_title(search.books["title"][0], k=1).hits[0]
    assert (
        "read text" in hit.matched
        and hit.text_score > 0.5
        and hit.score == pytest.approx(0.8 * hit.text_score + 0.2 * hit.clip_score, abs=1e-5)
    )


def test_the_candidate_ranking_equals_fusing_the_whole_collection(search: CoverSearch) -> None:
    rng = np.random.default_rng(0)
    vector = rng.normal(size=search.images.matrix.shape[1]).astype(np.float32)
    text = search.read_text.scores(search.books["title"][3])
    whole = fused(np.asarray(search.images.matrix) @ vector, text, 0.6)
    ranked = fused_candidates(ExactVectors(np.asarray(search.images.matrix)), vector, text, 0.6, 5, candidates=5)
    assert [r[0] for r in ranked] == list(np.argsort(-whole, kind="stable")[:5])


def test_an_uploaded_cover_is_identified_as_its_book(search: CoverSearch) -> None:
    named = 0
    for row in range(8):
        result = search.by_cover(Path(search.books["image_path"][row]).read_bytes(), k=3)
        assert result.read_text and sum(p for _, p in result.genres) <= 1.0001
        if result.identified is not None:
            assert result.identified.row == row and result.identified.genre == search.books["genre"][row]
            named += 1
    assert named >= 6


def test_the_api_says_what_a_cover_looks_like_and_why_each_result_was_found(search: CoverSearch) -> None:
    app = TestClient(create_app(search))
    body = app.post("/api/cover", params={"k": 2}, content=Path(search.books["image_path"][1]).read_bytes()).json()
    assert body["identified"]["title"] == search.books["title"][1] and body["read_text"]
    assert body["hits"][0]["title"] == search.books["title"][1] and "read text" in body["hits"][0]["matched"]
    found = app.get("/api/search", params={"title": search.books["title"][4], "k": 2}).json()
    assert found["hits"][0]["row"] == 4 and {"matched", "text_score", "clip_score"} <= set(found["hits"][0])
    assert 'id="identified"' in app.get("/").text


def test_the_cli_prints_the_identified_book(
    hybrid_index: Path, search: CoverSearch, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import flows.bookcovers as bookcovers

    monkeypatch.setattr(bookcovers, "_cover_search", lambda settings: search)
    main(["search", "--cover", str(search.books["image_path"][0]), "-k", "2"])
    out = capsys.readouterr().out
    assert f"this looks like {search.books['title'][0]}" in out and "read on the cover:" in out and "found by" in out


def test_a_batch_of_titles_one_row_per_query_and_rank_bad_rows_with_reasons(search: CoverSearch, tmp_path: Path) -> None:
    titles = [search.books["title"][0], "", search.books["title"][5], "x" * 600]
    pd.DataFrame({"Title": titles, "author": [search.books["author"][0], "", "", ""]}).to_csv(tmp_path / "q.csv", index=False)
    summary = search_batch(search, read_batch(tmp_path / "q.csv"), 3, tmp_path / "out.csv")
    out = pd.read_csv(tmp_path / "out.csv").fillna({"error": "", "identified_title": ""})
    assert list(out.columns) == OUTPUT_COLUMNS
    assert (summary["answered"], summary["refused"], summary["queries"]) == (2, 2, 4)
    answered = out[out["error"] == ""]
    assert answered.groupby("query_row")["rank"].apply(list).to_dict() == {0: [1, 2, 3], 2: [1, 2, 3]}
    assert answered[answered["rank"] == 1]["title"].tolist() == [search.books["title"][0], search.books["title"][5]]
    refused = out[out["error"] != ""]
    assert refused["query_row"].tolist() == [1, 3] and "type a book title" in refused["error"].iloc[0]


def test_a_batch_of_covers_relative_paths_missing_and_broken_images(search: CoverSearch, tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(Path(search.books["image_path"][4]).read_bytes())
    (tmp_path / "img" / "b.jpg").write_bytes(b"not an image")
    pd.DataFrame({"image": ["img/a.jpg", "img/b.jpg", "img/none.jpg", ""]}).to_csv(tmp_path / "q.csv", index=False)
    summary = search_batch(search, read_batch(tmp_path / "q.csv"), 2, tmp_path / "out.csv")
    out = pd.read_csv(tmp_path / "out.csv").fillna({"error": "", "identified_title": ""})
    assert (summary["answered"], summary["refused"]) == (1, 3)
    first = out[(out["query_row"] == 0) & (out["rank"] == 1)].iloc[0]
    assert first["title"] == search.books["title"][4] and first["identified_title"] == search.books["title"][4]
    assert out[out["error"] != ""]["query_row"].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "content, message",
    [
        ("name,author\nA,B\n", "needs a 'title' column"),
        ("title,image\nA,b.jpg\n", "one kind of query"),
        ("", "not a readable CSV"),
    ],
)
def test_a_batch_file_without_queries_is_refused_before_any_model_loads(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "q.csv").write_text(content)
    with pytest.raises(SystemExit) as stopped:
        main(["search", "--batch", str(tmp_path / "q.csv"), "-o", str(tmp_path / "out.csv")])
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_a_batch_needs_an_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "q.csv").write_text("title\nA\n")
    with pytest.raises(SystemExit):
        main(["search", "--batch", str(tmp_path / "q.csv")])
    assert "-o OUT.csv" in capsys.readouterr().err


def test_added_covers_are_read_and_their_text_appended_as_a_rebuild_would(hybrid_index: Path, tmp_path: Path) -> None:
    import shutil

    import scipy.sparse as sp
    from test_add_covers import add

    from tasks.inputs.synthetic_covers import render_cover
    from tasks.reading.text_match import load_counts, ngram_counts
    from tasks.search.text_index import BOOK_TEXT, READ_TEXT

    index = tmp_path / "cover_index"
    shutil.copytree(hybrid_index, index)
    folder = tmp_path / "new"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "a.jpg").write_bytes(
        render_cover("Travel", "Zanzibar Ferry Timetables", "Ola Berg", (96, 144), np.random.default_rng(5))
    )
    (folder / "covers.csv").write_text("title,author,image\nZanzibar Ferry Timetables,Ola Berg,img/a.jpg\n", encoding="utf-8")
    before = json.loads((index / "index.json").read_text())
    record = add(index, folder, tmp_path / "batches")
    assert record.covers_indexed == record.covers_with_read_text == 1
    books = pd.read_parquet(index / "books.parquet")
    assert "zanzibar" in books["read_text"].iloc[-1].lower()
    for name, column in (
        (READ_TEXT, books["read_text"].tolist()),
        (BOOK_TEXT, (books["title"] + " " + books["author"]).tolist()),
    ):
        assert (load_counts(index / name) != sp.csr_matrix(ngram_counts(column))).nnz == 0, name  # appended = rebuilt
    after = json.loads((index / "index.json").read_text())
    assert after["fusion"] == before["fusion"] and after["reading"] == before["reading"]
    found = CoverSearch(index, Classifier(), "a book cover of {category}").by_title("Zanzibar Ferry Timetables", k=1).hits[0]
    assert found.title == "Zanzibar Ferry Timetables" and "read text" in found.matched
    batch = pd.read_parquet(next((tmp_path / "batches").glob("*/books.parquet")))
    assert batch["read_text"].tolist() == books["read_text"].tail(1).tolist()  # a rebuild appends the batch's own text
