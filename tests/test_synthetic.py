"""The embedded default must look like the real files to every reader, and teach something."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tasks.inputs.synthetic import GENRE_TO_COVER_CATEGORY, GeneratedData, generate_dataset
from tasks.inputs.taxonomy import BOOKCOVER30_GENRES, BOOKDEPOSITORY_CATEGORIES, amazon_genre_id

COVER_COLUMNS = [
    "image", "name", "author", "format", "book_depository_stars", "price",
    "currency", "old_price", "isbn", "category", "img_paths",
]
SIZE = (64, 96)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> GeneratedData:
    return generate_dataset(tmp_path_factory.mktemp("small"), listing_rows=400, cover_books=80,
                            seed=3, cover_size=SIZE)


def _listing(data: GeneratedData) -> pd.DataFrame:
    return pd.read_csv(data.listing_csv, header=None, encoding="latin-1", dtype=str)


def _covers(data: GeneratedData) -> pd.DataFrame:
    return pd.read_csv(data.covers_csv, dtype={"isbn": str})


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_paths_and_counts(small: GeneratedData) -> None:
    assert small.listing_csv.name == "book32-listing.csv"
    assert small.listing_csv.parent.name == "amazon-books"
    assert small.covers_csv.name == "book-covers.csv"
    assert small.covers_csv.parent.name == "bookdepository-covers"
    assert small.listing_rows == 400 == len(_listing(small))
    covers = _covers(small)
    assert small.cover_rows == len(covers)
    assert covers["isbn"].nunique() == 80


def test_listing_format(small: GeneratedData) -> None:
    df = _listing(small)
    assert df.shape[1] == 7
    asin, filename, url, title, author, cat_id, cat = (df[i] for i in range(7))
    assert asin.is_unique
    assert asin.str.fullmatch(r"\d{9}[\dX]").all()
    assert (filename == asin + ".jpg").all()
    assert url.str.match(r"http://ecx\.images-amazon\.com/images/I/.+\.jpg$").all()
    assert title.notna().all() and author.notna().all()
    assert (cat_id == cat.map(lambda c: str(amazon_genre_id(c)))).all()
    assert set(cat) <= set(BOOKCOVER30_GENRES)


def test_listing_is_quoted_latin1(small: GeneratedData) -> None:
    raw = small.listing_csv.read_bytes()
    first = raw.split(b"\n", 1)[0]
    assert first.startswith(b'"') and first.endswith(b'"') and first.count(b'","') == 6
    try:
        raw.decode("utf-8")
        strict_utf8 = True
    except UnicodeDecodeError:
        strict_utf8 = False
    assert not strict_utf8 or any(b >= 0x80 for b in raw)


def test_covers_format(small: GeneratedData) -> None:
    covers = _covers(small)
    assert list(covers.columns) == COVER_COLUMNS
    assert covers["isbn"].str.fullmatch(r"978\d{10}").all()
    assert set(covers["category"]) <= set(BOOKDEPOSITORY_CATEGORIES)
    assert covers["img_paths"].is_unique
    assert covers["img_paths"].str.fullmatch(r"dataset/[A-Za-z-]+/\d{7}\.jpg").all()
    assert (covers["img_paths"].str.split("/").str[1] == covers["category"]).all()


def test_cover_images_exist_and_decode(small: GeneratedData) -> None:
    root = small.covers_csv.parent
    for rel in _covers(small)["img_paths"]:
        path = root / rel.replace("dataset/", "book-covers/", 1)
        assert path.is_file(), path
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == SIZE


def test_some_books_on_two_shelves_share_image(small: GeneratedData) -> None:
    covers = _covers(small)
    multi = covers.groupby("isbn").filter(lambda g: len(g) > 1)
    assert multi["isbn"].nunique() >= 1
    root = small.covers_csv.parent
    for _, group in multi.groupby("isbn"):
        assert group["category"].nunique() == len(group)
        assert group["name"].nunique() == 1 and group["author"].nunique(dropna=False) == 1
        images = {(root / p.replace("dataset/", "book-covers/", 1)).read_bytes() for p in group["img_paths"]}
        assert len(images) == 1


def test_genre_mapping_covers_bookcover30() -> None:
    assert set(GENRE_TO_COVER_CATEGORY) == set(BOOKCOVER30_GENRES)
    assert set(GENRE_TO_COVER_CATEGORY.values()) <= set(BOOKDEPOSITORY_CATEGORIES)


def test_genres_argument_limits_labels(tmp_path: Path) -> None:
    data = generate_dataset(tmp_path, listing_rows=200, cover_books=20, genres=5, cover_size=SIZE)
    assert set(_listing(data)[6]) <= set(BOOKCOVER30_GENRES[:5])
    allowed = {GENRE_TO_COVER_CATEGORY[g] for g in BOOKCOVER30_GENRES[:5]}
    covers = _covers(data)
    primary = covers[covers["category"].isin(allowed)]
    assert primary["isbn"].nunique() == covers["isbn"].nunique() == 20


def test_rewrites_only_its_folders(tmp_path: Path) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    stale = tmp_path / "bookdepository-covers" / "book-covers" / "Stale" / "0000001.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    generate_dataset(tmp_path, listing_rows=50, cover_books=5, cover_size=SIZE)
    assert keep.read_text() == "mine"
    assert not stale.exists()


def test_deterministic(tmp_path: Path) -> None:
    args = {"listing_rows": 150, "cover_books": 30, "cover_size": SIZE}
    generate_dataset(tmp_path / "a", seed=7, **args)
    generate_dataset(tmp_path / "b", seed=7, **args)
    generate_dataset(tmp_path / "c", seed=8, **args)
    a, b, c = (_all_bytes(tmp_path / n) for n in "abc")
    assert a == b
    assert a != c


def test_titles_carry_learnable_but_imperfect_signal(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline

    df = _listing(generate_dataset(tmp_path, listing_rows=3000, cover_books=0, seed=0))
    x_train, x_test, y_train, y_test = train_test_split(
        df[3], df[6], test_size=0.2, random_state=0, stratify=df[6])
    model = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000))
    accuracy = model.fit(x_train, y_train).score(x_test, y_test)
    assert 0.6 <= accuracy <= 0.97
