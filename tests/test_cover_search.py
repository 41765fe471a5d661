"""Cover search on an index built from tiny generated covers: ranking, bad queries, the page's API, the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from tasks.clip.model import initial_bundle, save_bundle
from tasks.genre.labeling import make_captions
from tasks.platform.sections import VectorIndexSettings
from tasks.platform.settings import ClipSettings, SmallClipSettings
from tasks.search.app import create_app
from tasks.search.engine import CoverSearch, SearchInputError
from tasks.search.index import embed_in_chunks
from tasks.search.vectors import ApproximateVectors, ExactVectors, write_approximate

TEMPLATE = "{title} by {author}, {genre}"
GENRES = ["Travel", "History", "Romance"]


class FixedGenre:
    """Stands in for the champion classifier: the first word of the title decides; "Xq..." is nonsense, a guess."""

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        genre = ["Travel" if t.lower().startswith("paris") else "History" for t in frame["title"]]
        probability = [0.13 if t.lower().startswith("xq") else 0.75 for t in frame["title"]]
        return pd.DataFrame({"genre": genre, "probability": probability})


@pytest.fixture(scope="module", params=["exact", "approximate"])
def index(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_data) -> Path:
    """60 covers; searched exactly, and through a FAISS index (every list probed: the same answers expected)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("index")
    covers = pd.read_csv(tiny_data.covers_csv)
    root = tiny_data.covers_csv.parent
    books = pd.DataFrame({
        "book_id": covers["isbn"].astype(str), "title": covers["name"], "author": covers["author"].fillna(""),
        "category": covers["category"], "image_path": [str(root / p.replace("dataset/", "book-covers/")) for p in covers["img_paths"]],
    }).head(60)
    books["genre"] = [GENRES[i % 3] for i in range(len(books))]
    cfg = ClipSettings(model="small", device="cpu", small=SmallClipSettings(image_size=32, patch_size=8, hidden_size=32, layers=1,
                                                                            heads=2, projection_dim=32, vocab_size=300, max_text_tokens=16))
    captions = make_captions(books, TEMPLATE).tolist()
    bundle = initial_bundle(cfg, captions, None, torch.device("cpu"))
    save_bundle(bundle, folder / "clip")
    images, texts, ok = embed_in_chunks(bundle, books, captions, chunk=25)
    assert ok.all() and images.shape == texts.shape == (60, 32)
    np.save(folder / "images.npy", images)
    np.save(folder / "captions.npy", texts)
    books.to_parquet(folder / "books.parquet", index=False)
    plan = write_approximate(folder, 60, VectorIndexSettings(approximate_above=10, codes="Flat", train_rows=1_000, chunk_rows=1_000)
                             ) if request.param == "approximate" else None
    (folder / "index.json").write_text(json.dumps({"caption_template": TEMPLATE, "covers": 60, "approximate": plan}))
    return folder


@pytest.fixture(scope="module")
def search(index: Path) -> CoverSearch:
    search = CoverSearch(index, FixedGenre(), "a book cover of {category}", low_confidence_below=0.3)
    kind = ApproximateVectors if search.info["approximate"] else ExactVectors
    assert isinstance(search.images, kind) and isinstance(search.captions, kind)
    return search


def png(color: str = "red", size: tuple[int, int] = (40, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_title_gets_its_predicted_genre_and_the_best_covers_in_order(search: CoverSearch) -> None:
    result = search.by_title("Paris in spring", k=5)
    assert (result.genre, result.genre_probability) == ("Travel", 0.75)
    scores = [hit.score for hit in result.hits]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    query = search.caption_template.format(title="Paris in spring", author="unknown author", genre="Travel", category="", probability=0.75)
    from tasks.clip.model import embed_texts

    brute = np.asarray(search.images.matrix) @ embed_texts(search.bundle, [query])[0]
    assert [hit.row for hit in result.hits] == list(np.argsort(-brute)[:5])
    assert scores[0] == pytest.approx(float(brute.max()), abs=1e-5)


def test_a_chosen_genre_is_used_as_given(search: CoverSearch) -> None:
    result = search.by_title("Paris in spring", genre="Romance", k=3)
    assert result.genre == "Romance" and result.genre_probability is None and len(result.hits) == 3


@pytest.mark.parametrize("title, k, message", [
    ("", 5, "type a book title"), ("   ", 5, "type a book title"), ("x" * 501, 5, "at most 500"), ("Paris", 0, "between 1 and 50"),
    ("Paris", 51, "between 1 and 50"),
])
def test_empty_huge_or_odd_queries_get_a_sentence(search: CoverSearch, title: str, k: int, message: str) -> None:
    with pytest.raises(SearchInputError, match=message):
        search.by_title(title, k=k)


def test_a_cover_gets_zero_shot_genres_and_its_closest_titles(search: CoverSearch) -> None:
    result = search.by_cover(png(), k=4)
    probabilities = [p for _, p in result.genres]
    assert {g for g, _ in result.genres} <= set(GENRES) and probabilities == sorted(probabilities, reverse=True)
    assert 0.99 <= sum(probabilities) <= 1.0001  # three genres: all of them shown
    assert len(result.hits) == 4


@pytest.mark.parametrize("data, message", [
    (b"", "empty"), (b"<html>not an image</html>", "not an image"), (b"\x00" * (16 * 2**20), "MiB"),
])
def test_unusable_uploads_get_a_sentence(search: CoverSearch, data: bytes, message: str) -> None:
    with pytest.raises(SearchInputError, match=message):
        search.by_cover(data)


def test_the_page_and_its_api(search: CoverSearch) -> None:
    app = TestClient(create_app(search))
    page = app.get("/")
    assert page.status_code == 200 and 'id="by-title"' in page.text and 'id="cover"' in page.text
    assert app.get("/api/genres").json() == sorted(GENRES)
    found = app.get("/api/search", params={"title": "Paris in spring", "k": 3}).json()
    assert found["genre"] == "Travel" and len(found["hits"]) == 3 and found["low_confidence"] is False
    assert app.get("/api/search", params={"title": "Xqzzv blorp"}).json()["low_confidence"] is True
    image = app.get(f"/cover/{found['hits'][0]['row']}")
    assert image.status_code == 200 and Image.open(io.BytesIO(image.content)).size[0] > 0
    refused = app.get("/api/search", params={"title": ""})
    assert refused.status_code == 400 and refused.json()["error"] == "type a book title to search for"
    assert app.get("/cover/100000").status_code == 400
    assert app.get("/cover/-1").status_code == 400
    by_cover = app.post("/api/cover", params={"k": 2}, content=png("blue"))
    assert by_cover.status_code == 200 and len(by_cover.json()["hits"]) == 2
    assert app.post("/api/cover", content=b"nope").status_code == 400


def test_the_command_line_prints_the_genre_and_ranked_covers(search: CoverSearch, capsys, tmp_path: Path) -> None:
    from flows.bookcovers import parser, print_search

    print_search(parser().parse_args(["search", "Paris in spring", "-k", "3"]), search)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "genre: Travel (predicted, p = 0.75)" and [line[:5] for line in lines[1:]] == ["  1. ", "  2. ", "  3. "]
    cover = tmp_path / "cover.png"
    cover.write_bytes(png())
    print_search(parser().parse_args(["search", "--cover", str(cover), "-k", "2"]), search)
    out = capsys.readouterr().out
    assert out.startswith("genre (zero-shot): ") and "closest titles:" in out
    print_search(parser().parse_args(["search", "Xqzzv blorp", "-k", "1"]), search)
    assert capsys.readouterr().out.splitlines()[0] == ("genre: History (predicted, p = 0.13: low confidence, a guess; "
                                                       "--genre searches within the genre you choose)")


def test_only_a_predicted_genre_under_the_threshold_is_a_guess(search: CoverSearch) -> None:
    assert search.by_title("Xqzzv blorp").low_confidence
    assert not search.by_title("Paris in spring").low_confidence
    assert not search.by_title("Xqzzv blorp", genre="Travel").low_confidence  # a chosen genre is nobody's guess


def test_a_missing_index_is_a_clear_error(tmp_path: Path) -> None:
    from tasks.platform.errors import InputFileError

    with pytest.raises(InputFileError, match="run the index_covers stage"):
        CoverSearch(tmp_path, FixedGenre(), "a book cover of {category}")


# ---------------------------------------------------------------- zero-shot with the user's labels


@pytest.mark.parametrize("text, expected", [
    ("Romance, Travel, Cookbooks", ["Romance", "Travel", "Cookbooks"]),
    (" romance ,\nTravel,, ROMANCE , Science  Fiction ", ["romance", "Travel", "Science Fiction"]),
])
def test_labels_are_split_trimmed_and_kept_once(text: str, expected: list[str]) -> None:
    from tasks.search.queries import parse_labels

    assert parse_labels(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "give two or more labels, comma-separated \\(got none\\)"),
    ("Romance", "got only 'Romance'\\): over one label the probability is always 1"),
    ("Romance, romance", "got only 'Romance'"),
    (",".join(f"label {i}" for i in range(3000)), "3000 labels; at most 200"),
    ("Romance, " + "x" * 101, "is over 100 characters"),
])
def test_bad_labels_get_one_sentence(text: str, message: str) -> None:
    from tasks.search.queries import parse_labels

    with pytest.raises(SearchInputError, match=message):
        parse_labels(text)


def test_zero_shot_scores_every_given_label_and_nothing_else(search: CoverSearch) -> None:
    from tasks.search.zero_shot import ZeroShotLabels

    scores = ZeroShotLabels(search.bundle, "a book cover of {label}").score(png("red"), ["Romance", "Travel", "Cookbooks"])
    assert sorted(label for label, _ in scores) == ["Cookbooks", "Romance", "Travel"]
    probabilities = [p for _, p in scores]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1.0, abs=1e-5)


def test_the_page_scores_the_users_labels_when_given(search: CoverSearch) -> None:
    app = TestClient(create_app(search))
    own = app.post("/api/cover", params={"k": 2, "labels": "Romance, Travel"}, content=png("blue")).json()
    assert own["own_labels"] is True and {label for label, _ in own["genres"]} == {"Romance", "Travel"}
    assert len(own["hits"]) == 2
    default = app.post("/api/cover", content=png("blue")).json()
    assert default["own_labels"] is False and {g for g, _ in default["genres"]} <= set(GENRES)
    one = app.post("/api/cover", params={"labels": "Romance"}, content=png("blue"))
    assert one.status_code == 400 and "two or more labels" in one.json()["error"]
    assert 'id="labels"' in app.get("/").text


def test_the_zero_shot_command_prints_each_cover_and_refuses_bad_input_in_one_line(index: Path, tmp_path: Path, capsys) -> None:
    from flows.bookcovers import main

    params = tmp_path / "zero-shot.yaml"
    params.write_text(f"paths:\n  cover_index: {index}\nclip:\n  device: cpu\n")
    red, blue = tmp_path / "red cover.png", tmp_path / "blue.png"
    red.write_bytes(png("red"))
    blue.write_bytes(png("blue"))
    main(["--params", str(params), "zero-shot", str(red), str(blue), "--labels", "Romance, Travel, Cookbooks"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(red), str(blue)]
    assert all(sorted(part.rsplit(" ", 1)[0] for part in line.split(": ", 1)[1].split(", ")) == ["Cookbooks", "Romance", "Travel"]
               for line in lines)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    for argv, message in ((["zero-shot", str(red), "--labels", "Romance"], "error: give two or more labels"),
                          (["zero-shot", str(tmp_path / "nope.png"), "--labels", "A, B"], "nope.png: no such file"),
                          (["zero-shot", str(broken), "--labels", "A, B"], "broken.png: the file is not an image this search can read")):
        with pytest.raises(SystemExit) as exited:
            main(["--params", str(params), *argv])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and err.count("\n") == 1 and message in err, err
