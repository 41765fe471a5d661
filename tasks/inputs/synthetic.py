"""The embedded default data set: what the pipeline trains on when the user brings no data.

A first run, a CI job or a demo must exercise every step (reading latin-1 listings,
mapping one taxonomy onto another, splitting covers by ISBN, fine-tuning on images)
without network access and without shipping anyone's copyrighted covers. So this module
writes files in the exact on-disk formats of the two real data sets, byte for byte
reproducible from a seed, with a signal that is learnable but deliberately imperfect:
a model that scores 100% here would hide bugs (label leaks, broken splits) instead of
revealing them, and a model that scores chance would prove nothing.
"""

from __future__ import annotations

import csv
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.inputs.synthetic_covers import render_cover
from tasks.inputs.synthetic_words import (
    EDITIONS,
    FILLERS,
    FIRST_NAMES,
    FIRST_NAMES_ACCENTED,
    FORMAT_WEIGHTS,
    FORMATS,
    GENERIC,
    GENERIC_TEMPLATES,
    GENRE_TO_COVER_CATEGORY,
    LAST_NAMES,
    LAST_NAMES_ACCENTED,
    RELATED,
    SECOND_CATEGORY,
    TEMPLATES,
    VOCAB,
)
from tasks.inputs.taxonomy import (
    BOOKCOVER30_GENRES,
    BOOKDEPOSITORY_CATEGORIES,
    amazon_genre_id,
)
from tasks.platform.settings import Settings

log = logging.getLogger(__name__)

LISTING_DIR = "amazon-books"
LISTING_FILE = "book32-listing.csv"
COVERS_DIR = "bookdepository-covers"
COVERS_FILE = "book-covers.csv"
COVERS_IMAGES = "book-covers"
COVER_COLUMNS: tuple[str, ...] = (
    "image", "name", "author", "format", "book_depository_stars", "price",
    "currency", "old_price", "isbn", "category", "img_paths",
)

_ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

NOISE_RATE = 0.15  # share of titles whose words point elsewhere or nowhere
PROLIFIC_AUTHORS = 3  # per genre: a weak extra signal, as real shelves have
PROLIFIC_RATE = 0.3
SECOND_CATEGORY_RATE = 0.10
ACCENT_RATE = 0.08  # per name part


@dataclass(frozen=True)
class GeneratedData:
    """Where the embedded default landed, so callers never rebuild paths by convention."""

    listing_csv: Path
    covers_csv: Path
    listing_rows: int
    cover_rows: int


@dataclass(frozen=True)
class _Book:
    genre: str
    title: str
    author: str


# ---------------------------------------------------------------- titles and authors


def _pick(rng: np.random.Generator, items: tuple[str, ...]) -> str:
    return items[int(rng.integers(len(items)))]


def _fill_title(rng: np.random.Generator, vocab: tuple[str, ...]) -> str:
    """Two distinct keywords from one genre, so a title carries one or two signal words."""
    i, j = rng.choice(len(vocab), size=2, replace=False)
    return _pick(rng, TEMPLATES).format(
        k=vocab[int(i)], k2=vocab[int(j)], f=_pick(rng, FILLERS),
        ed=_pick(rng, EDITIONS), n=int(rng.integers(1, 9)))


def _generic_title(rng: np.random.Generator) -> str:
    """A title with no genre word at all: the irreducible error real listings have."""
    return _pick(rng, GENERIC_TEMPLATES).format(
        f=_pick(rng, FILLERS), g=_pick(rng, GENERIC), n=int(rng.integers(1, 9)))


def _make_title(rng: np.random.Generator, genre: str) -> str:
    """Mostly genre words; sometimes a related genre's words or none, so accuracy < 100%."""
    if rng.random() >= NOISE_RATE:
        return _fill_title(rng, VOCAB[genre])
    if rng.random() < 0.5:
        return _fill_title(rng, VOCAB[_pick(rng, RELATED[genre])])
    return _generic_title(rng)


def _random_author(rng: np.random.Generator) -> str:
    first = _pick(rng, FIRST_NAMES_ACCENTED if rng.random() < ACCENT_RATE else FIRST_NAMES)
    last = _pick(rng, LAST_NAMES_ACCENTED if rng.random() < ACCENT_RATE else LAST_NAMES)
    return f"{first} {last}"


def _prolific_authors(rng: np.random.Generator,
                      genres: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """A few names per genre that recur, like series authors do on real shelves."""
    return {g: tuple(_random_author(rng) for _ in range(PROLIFIC_AUTHORS)) for g in genres}


def _make_book(rng: np.random.Generator, genre: str, prolific: dict[str, tuple[str, ...]]) -> _Book:
    author = _pick(rng, prolific[genre]) if rng.random() < PROLIFIC_RATE else _random_author(rng)
    return _Book(genre=genre, title=_make_title(rng, genre), author=author)


def _draw_genres(rng: np.random.Generator, genres: tuple[str, ...], n: int) -> list[str]:
    """Roughly balanced with realistic skew: a perfectly flat prior is a tell of fake data."""
    weights = rng.uniform(0.7, 1.3, size=len(genres))
    idx = rng.choice(len(genres), size=n, p=weights / weights.sum())
    return [genres[int(i)] for i in idx]


# ---------------------------------------------------------------- identifiers


def _isbn10_check(digits: str) -> str:
    total = sum((10 - i) * int(d) for i, d in enumerate(digits))
    check = (11 - total % 11) % 11
    return "X" if check == 10 else str(check)


def _ean13_check(digits: str) -> str:
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(digits))
    return str((10 - total % 10) % 10)


def _unique_codes(rng: np.random.Generator, n: int, make: Callable[[np.random.Generator], str]) -> list[str]:
    """Rejection-sample until unique: collisions are rare, so this stays O(n)."""
    seen: set[str] = set()
    codes: list[str] = []
    while len(codes) < n:
        code = make(rng)
        if code not in seen:
            seen.add(code)
            codes.append(code)
    return codes


def _asin(rng: np.random.Generator) -> str:
    """Book ASINs are ISBN-10s, so the checksum (and its occasional X) is kept."""
    body = str(int(rng.integers(0, 2))) + "".join(map(str, rng.integers(0, 10, size=8)))
    return body + _isbn10_check(body)


def _isbn13(rng: np.random.Generator) -> str:
    body = "978" + str(int(rng.integers(0, 2))) + "".join(map(str, rng.integers(0, 10, size=8)))
    return body + _ean13_check(body)


def _image_url(rng: np.random.Generator) -> str:
    key = "".join(_ALNUM[int(i)] for i in rng.integers(0, len(_ALNUM), size=8))
    return f"http://ecx.images-amazon.com/images/I/{int(rng.integers(4, 7))}1{key}L.jpg"


# ---------------------------------------------------------------- listing


def _write_listing(path: Path, rng: np.random.Generator, n: int, genres: tuple[str, ...],
                   prolific: dict[str, tuple[str, ...]]) -> int:
    """latin-1, fully quoted, headerless and sorted by id: the quirks readers must survive."""
    labels = sorted(_draw_genres(rng, genres, n), key=amazon_genre_id)
    asins = _unique_codes(rng, n, _asin)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="latin-1", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for asin, genre in zip(asins, labels):
            book = _make_book(rng, genre, prolific)
            writer.writerow([asin, f"{asin}.jpg", _image_url(rng), book.title, book.author,
                             str(amazon_genre_id(genre)), genre])
    return n


# ---------------------------------------------------------------- covers set


def _second_category(rng: np.random.Generator, genre: str) -> str:
    """Mostly the natural neighbour shelf, sometimes any other, as in the scraped set."""
    first = GENRE_TO_COVER_CATEGORY[genre]
    if rng.random() < 0.8:
        return SECOND_CATEGORY[genre]
    others = tuple(c for c in BOOKDEPOSITORY_CATEGORIES if c != first)
    return _pick(rng, others)


def _shop_fields(rng: np.random.Generator, isbn: str) -> dict[str, str]:
    """Shop metadata nobody trains on but readers must parse, missing values included."""
    price = float(rng.uniform(4, 40))
    old = "" if rng.random() < 0.16 else f"{price * float(rng.uniform(1.1, 1.8)):.1f}"
    stars = 0.0 if rng.random() < 0.1 else float(rng.integers(6, 11)) / 2
    fmt = FORMATS[int(rng.choice(len(FORMATS), p=np.array(FORMAT_WEIGHTS)))]
    return {
        "image": ("https://d1w7fb2mkkr3kw.cloudfront.net/assets/images/book/mid/"
                  f"{isbn[:4]}/{isbn[4:8]}/{isbn}.jpg"),
        "format": fmt, "book_depository_stars": f"{stars:.1f}", "price": f"{price:.2f}",
        "currency": "$", "old_price": old, "isbn": isbn,
    }


def _cover_entries(rng: np.random.Generator, n: int, genres: tuple[str, ...],
                   prolific: dict[str, tuple[str, ...]],
                   size: tuple[int, int]) -> list[tuple[str, dict[str, str], bytes]]:
    """One (category, row, jpeg) per listing; a book on two shelves reuses its jpeg bytes."""
    entries: list[tuple[str, dict[str, str], bytes]] = []
    isbns = _unique_codes(rng, n, _isbn13)
    for isbn, genre in zip(isbns, _draw_genres(rng, genres, n)):
        book = _make_book(rng, genre, prolific)
        row = {"name": book.title, "author": book.author, **_shop_fields(rng, isbn)}
        jpeg = render_cover(genre, book.title, book.author, size, rng)
        cats = [GENRE_TO_COVER_CATEGORY[genre]]
        if rng.random() < SECOND_CATEGORY_RATE:
            cats.append(_second_category(rng, genre))
        entries.extend((c, row, jpeg) for c in cats)
    return entries


def _write_covers(root: Path, rng: np.random.Generator, n: int, genres: tuple[str, ...],
                  prolific: dict[str, tuple[str, ...]], size: tuple[int, int]) -> int:
    """Numbered in shelf order with gaps, like the scrape, so no code relies on dense ids."""
    entries = sorted(_cover_entries(rng, n, genres, prolific, size),
                     key=lambda e: BOOKDEPOSITORY_CATEGORIES.index(e[0]))
    number = 0
    with (root / COVERS_FILE).open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COVER_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for category, row, jpeg in entries:
            number += 1 + int(rng.random() < 0.1)
            name = f"{number:07d}.jpg"
            folder = root / COVERS_IMAGES / category
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(jpeg)
            writer.writerow({**row, "category": category, "img_paths": f"dataset/{category}/{name}"})
    return len(entries)


# ---------------------------------------------------------------- entry point


def generate_dataset(out_dir: Path, listing_rows: int = 3000, cover_books: int = 600, seed: int = 0,
                     genres: int = 30, cover_size: tuple[int, int] = (96, 144)) -> GeneratedData:
    """Write both data sets from scratch so a stale or half-written default never survives.

    Listing and covers draw from separate child generators, so changing one size leaves
    the other data set's bytes unchanged.
    """
    if not 1 <= genres <= len(BOOKCOVER30_GENRES):
        raise ValueError(f"genres must be in 1..{len(BOOKCOVER30_GENRES)}, got {genres}")
    if listing_rows < 0 or cover_books < 0:
        raise ValueError("listing_rows and cover_books must be non-negative")
    out_dir = Path(out_dir)
    chosen = BOOKCOVER30_GENRES[:genres]
    root_rng = np.random.default_rng(seed)
    author_rng, listing_rng, covers_rng = root_rng.spawn(3)
    prolific = _prolific_authors(author_rng, chosen)

    listing_csv = out_dir / LISTING_DIR / LISTING_FILE
    covers_root = out_dir / COVERS_DIR
    for folder in (listing_csv.parent, covers_root):
        shutil.rmtree(folder, ignore_errors=True)
    covers_root.mkdir(parents=True)

    n_listing = _write_listing(listing_csv, listing_rng, listing_rows, chosen, prolific)
    n_covers = _write_covers(covers_root, covers_rng, cover_books, chosen, prolific, tuple(cover_size))
    log.info("embedded default: %d listing rows, %d cover rows (%d books) in %s",
             n_listing, n_covers, cover_books, out_dir)
    return GeneratedData(listing_csv=listing_csv, covers_csv=covers_root / COVERS_FILE,
                         listing_rows=n_listing, cover_rows=n_covers)


__all__ = ["GENRE_TO_COVER_CATEGORY", "GeneratedData", "generate_dataset", "render_cover"]


@task(name="generate-embedded-data", cache_policy=NO_CACHE)
def generate_embedded_data(settings: Settings) -> dict[str, object]:
    """The embedded default as a pipeline step, sized by the `generate` section of params.yaml."""
    cfg = settings.generate
    data = generate_dataset(cfg.out_dir, cfg.listing_rows, cfg.cover_books, cfg.seed, cfg.genres)
    return {"listing_rows": data.listing_rows, "cover_rows": data.cover_rows, "out_dir": str(cfg.out_dir)}
