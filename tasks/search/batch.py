"""`bookcovers search --batch FILE.csv -o OUT.csv`: thousands of queries in one process, the models loaded once.

FILE has a `title` column (and optionally `author`) for title queries, or an `image` column (paths
relative to FILE) for cover queries. OUT has one row per query and rank: `query_row` (FILE's 0-based
data row), `rank` (1 = best), the hit's fused `score`, `title`, `author`, `image`, `genre` and why it
was found (`matched`, with each signal's score), plus what the query itself got (its genre, the book
a cover was identified as). A row that cannot be searched (no title, a missing or unreadable image)
gets one OUT row with its `error` and no rank: rows in = rows answered + rows refused.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd
from tqdm import tqdm

from tasks.platform.errors import InputFileError
from tasks.search.queries import SearchInputError, read_cover

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = [
    "query_row",
    "query",
    "rank",
    "score",
    "title",
    "author",
    "image",
    "genre",
    "matched",
    "clip_score",
    "text_score",
    "book_id",
    "query_genre",
    "identified_title",
    "identified_author",
    "error",
]


class Searcher(Protocol):  # tasks/search/engine.py's CoverSearch
    def by_title(self, title: str, genre: str | None = None, k: int = 5, author: str = ""): ...  # noqa: ANN201
    def by_cover(self, data: bytes, k: int = 5): ...  # noqa: ANN201


@dataclass(frozen=True)
class BatchQueries:
    frame: pd.DataFrame
    kind: str  # "title" | "image"
    folder: Path  # image paths are relative to it


def read_batch(path: Path) -> BatchQueries:
    """The queries file, checked before any model loads: a CSV with a `title` or an `image` column."""
    if not path.is_file():
        raise InputFileError(f"{path}: no such file; give a CSV with a title (and optionally author) or an image column")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise InputFileError(f"{path}: not a readable CSV ({type(error).__name__}: {str(error)[:120]})") from error
    columns = {c.strip().lower(): c for c in frame.columns}
    if "title" in columns and "image" in columns:
        raise InputFileError(f"{path}: has both a title and an image column; one kind of query per file")
    kind = "title" if "title" in columns else "image" if "image" in columns else None
    if kind is None:
        raise InputFileError(
            f"{path}: needs a 'title' column (title queries, optionally 'author') or an 'image' column "
            f"(cover queries, paths relative to the file); found {list(frame.columns)}"
        )
    frame = frame.rename(columns={columns[kind]: kind, **({columns["author"]: "author"} if "author" in columns else {})})
    return BatchQueries(frame, kind, path.parent)


def check_output(path: Path) -> None:
    if path.suffix.lower() != ".csv":
        raise InputFileError(f"{path}: the batch output is a CSV; name it OUT.csv")


def answer_rows(search: Searcher, queries: BatchQueries, row: int, k: int) -> list[dict[str, object]]:
    """One query's OUT rows, best first; a query that cannot be searched raises SearchInputError with its reason."""
    values = queries.frame.iloc[row]
    if queries.kind == "title":
        result = search.by_title(str(values["title"]), None, k, str(values.get("author", "")))
        query, query_genre, named = str(values["title"]), result.genre, None
    else:
        image = str(values["image"]).strip()
        if not image:
            raise SearchInputError("the image cell is empty")
        result = search.by_cover(read_cover(queries.folder / image), k)
        query, query_genre, named = image, result.genres[0][0] if result.genres else "", result.identified
    return [
        {
            "query_row": row,
            "query": query,
            "rank": rank,
            "score": round(hit.score, 6),
            "title": hit.title,
            "author": hit.author,
            "image": hit.image_path,
            "genre": hit.genre,
            "matched": hit.matched,
            "clip_score": round(hit.clip_score, 6),
            "text_score": round(hit.text_score, 6),
            "book_id": hit.book_id,
            "query_genre": query_genre,
            "identified_title": named.title if named else "",
            "identified_author": named.author if named else "",
            "error": "",
        }
        for rank, hit in enumerate(result.hits, start=1)
    ]


def search_batch(search: Searcher, queries: BatchQueries, k: int, output: Path) -> dict[str, object]:
    """Every query answered into `output` as it goes (a progress bar over the queries); returns the counts."""
    output.parent.mkdir(parents=True, exist_ok=True)
    answered = refused = 0
    with output.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=OUTPUT_COLUMNS)
        writer.writeheader()
        for row in tqdm(range(len(queries.frame)), desc=f"{queries.kind} queries", unit="query", disable=len(queries.frame) < 20):
            try:
                writer.writerows(answer_rows(search, queries, row, k))
                answered += 1
            except SearchInputError as error:
                refused += 1
                query = str(queries.frame.iloc[row][queries.kind])
                writer.writerow({"query_row": row, "query": query, "error": str(error)})
    log.info("%d queries: %d answered, %d refused (their reasons in %s)", answered + refused, answered, refused, output)
    return {"queries": answered + refused, "answered": answered, "refused": refused, "output": str(output), "kind": queries.kind}
