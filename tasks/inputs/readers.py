"""Readers for the listing and cover formats users actually have.

Every reader returns one row per data row of the file, never fewer: a row that cannot be
parsed comes back with `parse_error` set, so validation can quarantine it with a reason and
rows in = rows kept + rows quarantined holds from the very first byte. Only file-level
problems (missing file, unknown layout) raise, as `InputFileError` with one sentence that
names the file and the fix.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Literal

import pandas as pd

from tasks.inputs.csvtext import DecodedText, csv_records, decode_bytes, first_record, read_text, sniff_delimiter  # noqa: F401  decode_bytes: part of this module's interface
from tasks.inputs.taxonomy import AMAZON_GENRES
from tasks.platform.errors import InputFileError

log = logging.getLogger(__name__)

ListingFormat = Literal["amazon", "category_title", "generic"]
CoversFormat = Literal["bookdepository", "generic"]

AMAZON_COLUMNS = ("asin", "filename", "image_url", "title", "author", "category_id", "category")
BOOKDEPOSITORY_REQUIRED = ("name", "author", "isbn", "category", "img_paths")
GENERIC_REQUIRED = ("title", "image")
# Spreadsheet and pandas spellings of "no value": an author cell reading "NaN" names nobody.
MISSING_MARKERS = frozenset({"nan", "null", "none", "n/a", "na", "#n/a"})
LISTING_COLUMNS = ["source_file", "source_row", "book_id", "title", "author", "genre", "parse_error"]
COVER_COLUMNS = [
    "source_file", "source_row", "book_id", "title", "author", "category",
    "image_ref", "image_root", "parse_error",
]


def sniff_listing_format(path: Path, text: str, labeled: bool = True) -> ListingFormat:
    """The layout from the first row. `labeled=False` (a listing to classify) also takes a headed
    table with a title column and no genre."""
    header = first_record(text, sniff_delimiter(text))
    if header[:2] == ["category", "title"]:
        return "category_title"
    if "title" in header and ("category" in header or "genre" in header or not labeled):
        return "generic"
    if len(header) == len(AMAZON_COLUMNS):
        return "amazon"
    raise InputFileError(
        f"{path}: unknown listing layout (first row has {len(header)} fields: {header[:8]}); "
        "expected book32's 7 unquoted-header columns, a 'Category,Title' table, "
        "or a CSV with a header holding title and category (delimited by ',', ';', tab or '|')"
    )


def sniff_covers_format(path: Path, text: str) -> CoversFormat:
    header = first_record(text, sniff_delimiter(text))
    if all(column in header for column in BOOKDEPOSITORY_REQUIRED):
        return "bookdepository"
    if all(column in header for column in GENERIC_REQUIRED):
        return "generic"
    raise InputFileError(
        f"{path}: unknown cover-table layout (header {header[:12]}); expected Book Depository's "
        f"columns {list(BOOKDEPOSITORY_REQUIRED)} or a generic CSV with {list(GENERIC_REQUIRED)}[,author,category]"
    )


def normalized_text(values: pd.Series) -> pd.Series:
    """Lower case, punctuation folded to spaces, whitespace collapsed: 'Paris, 2016 ' == 'paris 2016'."""
    return values.fillna("").astype(str).str.lower().str.replace(r"[\W_]+", " ", regex=True).str.strip()


def title_book_id(title: str | None, author: str | None) -> str:
    """A stable id for rows without an ASIN/ISBN, so duplicates and splits still work by book."""
    key = f"{(title or '').strip().lower()}\x1f{(author or '').strip().lower()}"
    return "t" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:15]


def _cell(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _author(value: str | None) -> str | None:
    author = _cell(value)
    return None if author is not None and author.lower() in MISSING_MARKERS else author


def _record_error(row: list[str], expected_columns: int) -> str | None:
    """Why a record cannot be trusted, or None. A cell with a line break means an unbalanced
    quote swallowed the lines after it; those lines must be reported, not silently merged."""
    lines_spanned = 1 + max((cell.count("\n") for cell in row), default=0)
    if lines_spanned > 1:
        return f"multiline_cell:a quoted cell spans {lines_spanned} lines (unbalanced quote?), {len(row)} fields"
    if len(row) != expected_columns:
        return f"wrong_column_count:{len(row)}!={expected_columns}"
    return None


def _header_rows(path: Path, text: str, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    records = [(line, row) for line, row in csv_records(text, sniff_delimiter(text)) if any(cell.strip() for cell in row)]
    if not records:
        raise InputFileError(f"{path}: no rows at all; point params.yaml at a listing with rows")
    header = checked_header(path, records[0][1], required)
    if len(records) == 1:
        raise InputFileError(f"{path}: a header but no data rows; add rows or remove the file from data.listings")
    return header, records[1:]


def checked_header(path: Path, row: list[str], required: tuple[str, ...]) -> list[str]:
    """The header's column names, lower case; an error naming the file when a required one is missing."""
    header = [cell.strip().lstrip("\ufeff").lower() for cell in row]
    missing = [column for column in required if column not in header]
    if missing:
        raise InputFileError(f"{path}: missing column(s) {missing} in header {header[:12]}; add them or fix the delimiter")
    return header


def _row_dict(header: list[str], row: list[str]) -> tuple[dict[str, str], str | None]:
    error = _record_error(row, len(header))
    return ({} if len(row) != len(header) else dict(zip(header, row))), error


def _identity(fields: dict[str, str], id_column: str | None) -> dict[str, object]:
    """Title, author and book id of a generic row; rows without an id get one from title + author."""
    title, author = _cell(fields.get("title")), _author(fields.get("author"))
    book_id = _cell(fields.get(id_column)) if id_column else None
    return {"book_id": book_id or (title_book_id(title, author) if title else None), "title": title, "author": author}


def _listing_frame(records: list[dict[str, object]], path: Path, decoded: DecodedText) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=LISTING_COLUMNS)
    log.info("read %d listing rows from %s (%s)", len(frame), path, decoded.encoding)
    return frame


def amazon_record(path: Path, number: int, row: list[str]) -> dict[str, object]:
    """One row of book32's headerless 7-column layout."""
    record: dict[str, object] = {"source_file": str(path), "source_row": number,
                                 "parse_error": _record_error(row, len(AMAZON_COLUMNS))}
    if len(row) == len(AMAZON_COLUMNS):
        fields = dict(zip(AMAZON_COLUMNS, row))
        record.update(
            book_id=_cell(fields["asin"]),
            title=_cell(fields["title"]),
            author=_author(fields["author"]),
            genre=_amazon_genre(fields["category"], fields["category_id"]),
        )
    return record


def read_amazon_listing(path: Path, decoded: DecodedText) -> pd.DataFrame:
    """book32-listing.csv: 7 quoted columns, no header, latin-1."""
    records = [amazon_record(path, number, row) for number, row in csv_records(decoded.text) if any(cell.strip() for cell in row)]
    return _listing_frame(records, path, decoded)


def _amazon_genre(category: str, category_id: str) -> str | None:
    """The CATEGORY name, or the name of CATEGORY_ID when the name column is empty."""
    name = _cell(category)
    if name is None and category_id.strip().isascii() and category_id.strip().isdigit() and int(category_id) < len(AMAZON_GENRES):
        return AMAZON_GENRES[int(category_id)]
    return name


def category_title_record(path: Path, header: list[str], number: int, row: list[str]) -> dict[str, object]:
    """One row of the 'Category,Title' table: no author and no id, so the id derives from the title."""
    fields, error = _row_dict(header, row)
    title = _cell(fields.get("title"))
    return {"source_file": str(path), "source_row": number, "parse_error": error,
            "book_id": title_book_id(title, None) if title else None,
            "title": title, "author": None, "genre": _cell(fields.get("category"))}


def generic_record(path: Path, header: list[str], number: int, row: list[str]) -> dict[str, object]:
    """One row of a CSV whose header holds title and optionally category (or genre), author and id."""
    genre_column = "category" if "category" in header else "genre"
    id_column = next((c for c in ("asin", "isbn", "book_id", "id") if c in header), None)
    fields, error = _row_dict(header, row)
    return {"source_file": str(path), "source_row": number, "parse_error": error,
            **_identity(fields, id_column), "genre": _cell(fields.get(genre_column))}


def read_category_title_listing(path: Path, decoded: DecodedText) -> pd.DataFrame:
    header, body = _header_rows(path, decoded.text, HEADED_REQUIRED["category_title"])
    return _listing_frame([category_title_record(path, header, number, row) for number, row in body], path, decoded)


def read_generic_listing(path: Path, decoded: DecodedText) -> pd.DataFrame:
    header, body = _header_rows(path, decoded.text, HEADED_REQUIRED["generic"])
    return _listing_frame([generic_record(path, header, number, row) for number, row in body], path, decoded)


HEADED_REQUIRED = {"category_title": ("category", "title"), "generic": ("title",)}
HEADED_RECORDS = {"category_title": category_title_record, "generic": generic_record}
LISTING_READERS = {
    "amazon": read_amazon_listing,
    "category_title": read_category_title_listing,
    "generic": read_generic_listing,
}


def read_listing(path: Path, listing_format: str = "auto") -> pd.DataFrame:
    """A listing file in the given layout, or with its layout sniffed from the first row ("auto")."""
    decoded = read_text(path)
    detected = sniff_listing_format(path, decoded.text) if listing_format == "auto" else listing_format
    return LISTING_READERS[detected](path, decoded)


def resolve_listing_paths(root: Path, patterns: list[str]) -> list[Path]:
    """The listing files under data.root matching the configured globs, sorted for stable order."""
    if not root.is_dir():
        raise InputFileError(f"{root}: data.root is not a folder; set data.root in params.yaml to your data folder")
    paths = sorted({path for pattern in patterns for path in root.glob(pattern) if path.is_file()})
    if not paths:
        raise InputFileError(f"{root}: no listing file matches {patterns}; set data.listings in params.yaml")
    return paths


def read_listings(root: Path, patterns: list[str], listing_format: str = "auto") -> pd.DataFrame:
    frames = [read_listing(path, listing_format) for path in resolve_listing_paths(root, patterns)]
    return pd.concat(frames, ignore_index=True)[LISTING_COLUMNS]


def read_bookdepository_covers(path: Path, decoded: DecodedText) -> pd.DataFrame:
    """book-covers.csv; `img_paths` reads dataset/<Category>/<id>.jpg for book-covers/<Category>/<id>.jpg."""
    header, body = _header_rows(path, decoded.text, BOOKDEPOSITORY_REQUIRED)
    root = path.parent
    records: list[dict[str, object]] = []
    for number, row in body:
        fields, error = _row_dict(header, row)
        image_ref = _cell(fields.get("img_paths"))
        if image_ref and image_ref.startswith("dataset/"):
            image_ref = "book-covers/" + image_ref[len("dataset/"):]
        records.append({
            "source_file": str(path), "source_row": number, "parse_error": error,
            "book_id": _cell(fields.get("isbn")), "title": _cell(fields.get("name")),
            "author": _author(fields.get("author")), "category": _cell(fields.get("category")),
            "image_ref": image_ref, "image_root": str(root),
        })
    return pd.DataFrame.from_records(records, columns=COVER_COLUMNS)


def read_generic_covers(path: Path, decoded: DecodedText) -> pd.DataFrame:
    """title,author,image[,category] with image paths relative to the CSV's folder."""
    header, body = _header_rows(path, decoded.text, GENERIC_REQUIRED)
    id_column = next((c for c in ("isbn", "book_id", "id") if c in header), None)
    records: list[dict[str, object]] = []
    for number, row in body:
        fields, error = _row_dict(header, row)
        records.append({
            "source_file": str(path), "source_row": number, "parse_error": error,
            **_identity(fields, id_column), "category": _cell(fields.get("category")),
            "image_ref": _cell(fields.get("image")), "image_root": str(path.parent),
        })
    return pd.DataFrame.from_records(records, columns=COVER_COLUMNS)


COVER_READERS = {"bookdepository": read_bookdepository_covers, "generic": read_generic_covers}


def read_covers(path: Path, covers_format: str = "auto") -> tuple[pd.DataFrame, CoversFormat]:
    decoded = read_text(path)
    detected = sniff_covers_format(path, decoded.text) if covers_format == "auto" else covers_format
    frame = COVER_READERS[detected](path, decoded)  # type: ignore[index]
    log.info("read %d cover rows from %s (%s, %s)", len(frame), path, detected, decoded.encoding)
    return frame, detected  # type: ignore[return-value]


def project_relative(path: Path) -> str:
    """Paths stored in DVC outputs are relative to the project, so hashes match across clones."""
    return os.path.relpath(path, Path.cwd())
