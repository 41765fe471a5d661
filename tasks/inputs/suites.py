"""The Great Expectations suites validation runs, and the keys the listing's uniqueness is judged on.

Each expectation carries a machine-readable quarantine reason. GX finds the failing rows
(COMPLETE result format, indexed by `row_id`) and every row it flags goes to the quarantine
with all its reasons. Row checks look at one row at a time, so they run on any chunk of a
table. Uniqueness looks at all rows, so for the listing it is judged on compact keys (64-bit
hashes of the book id and of the normalised title and author, ~35 bytes a row) that a driver
can hold for millions of rows while the rows themselves stay in chunks on workers.

Uniqueness is plain pandas (group, duplicated), not a GX suite: GX's per-row result is what it
costs. Measured on the keys of 2 million generated rows (343,666 repeats): 13.8 s and +0.65 GiB
through GX against 0.64 s and +0.13 GiB in pandas, with the same rows flagged (a /tmp scratch script).
"""

from __future__ import annotations

import re

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations import Expectation

from tasks.inputs.readers import normalized_text
from tasks.inputs.taxonomy import AMAZON_GENRES, BOOKCOVER30_GENRES
from tasks.platform.errors import DataQualityError
from tasks.platform.settings import ValidateSettings

# What a spreadsheet would execute when someone opens a listing or the quarantine report:
# a formula ('=...'), or a DDE / function call led by + - @ ('+cmd|...', '@SUM(...)').
# '-->> RICE RECIPES' or '+1 (555)' are titles, not formulas.
FORMULA_LIKE = re.compile(r"^\s*(?:=|[+\-@].*\||[+\-@][A-Za-z_.]+\()")
LISTING_KEY_COLUMNS = ["row_id", "book_id", "genre", "title_author_key", "title_key", "authored"]
Flags = dict[int, list[str]]


def check(reason: str, expectation: type[Expectation], **arguments: object) -> Expectation:
    """An expectation that carries, in its meta, the quarantine reason of the rows it fails."""
    return expectation(meta={"reason": reason}, **arguments)


def run_suite(frame: pd.DataFrame, suite_name: str, checks: list[Expectation]) -> Flags:
    """Run one GX suite over `frame`; return row_id -> reasons of the rows it flags."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch_definition = (
        context.data_sources.add_pandas(suite_name)
        .add_dataframe_asset(f"{suite_name}_rows")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = gx.ExpectationSuite(name=suite_name)
    for expectation in checks:
        suite.add_expectation(expectation)
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite_name}_validation", data=batch_definition, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["row_id"]},
    )
    flagged: Flags = {}
    for outcome in result.results:
        if outcome.exception_info.get("raised_exception"):
            raise RuntimeError(f"GX expectation {outcome.expectation_config.type} crashed: {outcome.exception_info}")
        if outcome.success:
            continue
        reason = outcome.expectation_config.meta["reason"]
        if "unexpected_index_list" not in outcome.result:  # a table-level expectation: no row to blame
            raise DataQualityError(f"{suite_name}: {reason} ({outcome.expectation_config.type}, "
                                   f"observed {outcome.result.get('observed_value')}); the input cannot be used as it is")
        for unexpected in outcome.result["unexpected_index_list"]:
            flagged.setdefault(int(unexpected["row_id"]), []).append(reason)
    return flagged


def split(frame: pd.DataFrame, flagged: Flags) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows not flagged, rows flagged with their reasons joined by ';')."""
    bad = frame["row_id"].isin(flagged.keys())
    quarantined = frame[bad].copy()
    quarantined["reason"] = [";".join(flagged[row_id]) for row_id in quarantined["row_id"]]
    return frame[~bad], quarantined


def with_row_ids(frame: pd.DataFrame, first_row_id: int = 0) -> pd.DataFrame:
    """Rows numbered from `first_row_id` (a chunk's place in the whole table), with the per-row facts the checks read."""
    frame = frame.reset_index(drop=True).copy()
    frame["row_id"] = np.arange(first_row_id, first_row_id + len(frame), dtype=np.int64)
    frame["parse_ok"] = frame["parse_error"].isna()
    text_cells = [frame[column].fillna("").astype(str) for column in ("title", "author")]
    frame["formula_free"] = ~np.logical_or.reduce([cells.str.match(FORMULA_LIKE) for cells in text_cells])
    return frame


def require_columns(frame: pd.DataFrame, name: str, columns: list[str]) -> None:
    """Table-level check before any row-level one: the columns the stage reads are all there."""
    run_suite(frame.head(0), f"{name}_table", [
        check("columns_missing", gx.expectations.ExpectTableColumnsToMatchSet, column_set=columns, exact_match=False),
    ])


def flagged(rows: pd.DataFrame, failed: pd.Series, reason: str) -> Flags:
    """row_id -> [reason] of the rows where `failed` is true."""
    return {int(row_id): [reason] for row_id in rows.loc[failed.to_numpy(), "row_id"]}


def unique_key_flags(rows: pd.DataFrame, key: list[str], label: str) -> Flags:
    """Rows whose key carries two labels (all of them: which is right is unknown), and repeats of a key after its first row."""
    conflicting = rows.groupby(key, dropna=False)[label].transform("nunique").fillna(1) > 1
    repeated = rows.duplicated(subset=key, keep="first") & ~conflicting
    return {**flagged(rows, conflicting, f"conflicting_{label}"), **flagged(rows, repeated, "duplicate_" + "_".join(key))}


def listing_text_checks(settings: ValidateSettings) -> list[Expectation]:
    """The row checks of every listing, labeled or not."""
    return [
        check("unparseable_row", gx.expectations.ExpectColumnValuesToBeInSet, column="parse_ok", value_set=[True]),
        check("formula_like_cell", gx.expectations.ExpectColumnValuesToBeInSet, column="formula_free", value_set=[True]),
        check("book_id_missing", gx.expectations.ExpectColumnValuesToNotBeNull, column="book_id"),
        check("title_empty", gx.expectations.ExpectColumnValuesToNotBeNull, column="title"),
        check("title_too_long", gx.expectations.ExpectColumnValueLengthsToBeBetween, column="title", min_value=1, max_value=settings.title_max_chars),
        check("author_too_long", gx.expectations.ExpectColumnValueLengthsToBeBetween, column="author", min_value=1, max_value=settings.author_max_chars),
    ]


def known_genres(settings: ValidateSettings) -> tuple[str, ...]:
    return AMAZON_GENRES if settings.genre_set == "book32" else BOOKCOVER30_GENRES


def listing_checks(settings: ValidateSettings) -> list[Expectation]:
    return [
        *listing_text_checks(settings),
        check("genre_missing", gx.expectations.ExpectColumnValuesToNotBeNull, column="genre"),
        check("genre_unknown", gx.expectations.ExpectColumnValuesToBeInSet, column="genre", value_set=list(known_genres(settings))),
    ]


def _hashed(values: pd.Series) -> np.ndarray:
    """64-bit hashes, the same in every process (pandas hashes with a fixed key): two of 10 million rows collide with p ~ 3e-6."""
    return pd.util.hash_pandas_object(values.reset_index(drop=True), index=False).to_numpy()


def listing_keys(survivors: pd.DataFrame, settings: ValidateSettings) -> pd.DataFrame:
    """What uniqueness needs of each listing row that passed the row checks, and nothing more."""
    title, author = normalized_text(survivors["title"]), normalized_text(survivors["author"])
    codes = {genre: code for code, genre in enumerate(known_genres(settings))}
    return pd.DataFrame({
        "row_id": survivors["row_id"].to_numpy(),
        "book_id": _hashed(survivors["book_id"].astype(str)),
        "genre": survivors["genre"].map(codes).to_numpy(np.int16),
        "title_author_key": _hashed(title + "\x1f" + author),
        "title_key": _hashed(title),
        "authored": (author != "").to_numpy(),
    })[LISTING_KEY_COLUMNS]


def listing_uniqueness_flags(keys: pd.DataFrame, min_rows_per_genre: int) -> Flags:
    """Reasons for the listing rows that passed the row checks but repeat or conflict with others, in three rounds,
    each over the rows the previous kept: one genre per book id; the same title and author under another id
    (it would leak between CV folds and the test split); then genres too rare to cross-validate."""
    book_flags = unique_key_flags(keys, ["book_id"], "genre")
    kept = keys[~keys["row_id"].isin(book_flags.keys())]
    first_of_pair = ~kept.duplicated(subset=["title_author_key"], keep="first")
    # A row without author also repeats any authored row of its title (the Category,Title table re-lists Amazon's books).
    authored_titles = kept.loc[kept["authored"], "title_key"].unique()
    repeated_title = ~(first_of_pair & (kept["authored"] | ~kept["title_key"].isin(authored_titles)))
    title_flags = flagged(kept, repeated_title, "duplicate_title")
    kept = kept[~repeated_title.to_numpy()]
    rare = kept.groupby("genre")["genre"].transform("size") < min_rows_per_genre
    return {**book_flags, **title_flags, **flagged(kept, rare, "genre_too_rare")}
