"""Validate and clean the listing and the covers with Great Expectations suites.

Each expectation carries a machine-readable quarantine reason. GX finds the failing rows
(COMPLETE result format, indexed by `row_id`); every row it flags goes to the quarantine with
all its reasons, every other row is kept, so rows in = rows kept + rows quarantined by
construction. Uniqueness is checked in a second suite over the rows that passed the first,
so a broken row never knocks out a good duplicate of itself.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations import Expectation
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.inputs.images import facts_table, probe_images
from tasks.inputs.readers import COVER_COLUMNS, LISTING_COLUMNS, normalized_text, project_relative, read_covers, read_listings
from tasks.inputs.taxonomy import AMAZON_GENRES, BOOKCOVER30_GENRES, BOOKDEPOSITORY_CATEGORIES
from tasks.platform.engine import IN_PROCESS
from tasks.platform.errors import DataQualityError
from tasks.platform.outputs import write_json
from tasks.platform.settings import EngineSettings, RuntimeSettings, Settings, ValidateSettings
from tasks.platform.tracking import ensure_tracking_reachable, log_stage_run

log = logging.getLogger(__name__)

# What a spreadsheet would execute when someone opens a listing or the quarantine report:
# a formula ('=...'), or a DDE / function call led by + - @ ('+cmd|...', '@SUM(...)').
# '-->> RICE RECIPES' or '+1 (555)' are titles, not formulas.
FORMULA_LIKE = re.compile(r"^\s*(?:=|[+\-@].*\||[+\-@][A-Za-z_.]+\()")

QUARANTINE_COLUMNS = ["table", "source_file", "source_row", "book_id", "title", "author", "label", "image_ref", "reason",
                      "detail"]


def check(reason: str, expectation: type[Expectation], **arguments: object) -> Expectation:
    """An expectation that carries, in its meta, the quarantine reason of the rows it fails."""
    return expectation(meta={"reason": reason}, **arguments)


@dataclass
class TableOutcome:
    name: str
    kept: pd.DataFrame
    quarantined: pd.DataFrame
    rows_in: int
    by_reason: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "rows_in": self.rows_in,
            "rows_kept": len(self.kept),
            "rows_quarantined": len(self.quarantined),
            "quarantined_fraction": round(len(self.quarantined) / self.rows_in, 6) if self.rows_in else 0.0,
            "by_reason": dict(sorted(self.by_reason.items())),
        }


def run_suite(frame: pd.DataFrame, suite_name: str, checks: list[Expectation]) -> dict[int, list[str]]:
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
    flagged: dict[int, list[str]] = {}
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


def _split(frame: pd.DataFrame, flagged: dict[int, list[str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    bad = frame["row_id"].isin(flagged.keys())
    quarantined = frame[bad].copy()
    quarantined["reason"] = [";".join(flagged[row_id]) for row_id in quarantined["row_id"]]
    return frame[~bad], quarantined


def _check_rows_then_uniqueness(
    frame: pd.DataFrame, name: str, row_checks: list[Expectation], key: list[str], label: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    flagged = run_suite(frame, f"{name}_rows", row_checks)
    survivors, rejected = _split(frame, flagged)
    survivors = survivors.copy()
    labels_per_key = survivors.groupby(key, dropna=False)[label].transform("nunique")
    survivors["label_consistent"] = labels_per_key.fillna(1) <= 1
    survivors["first_of_key"] = ~survivors.duplicated(subset=key, keep="first") | ~survivors["label_consistent"]
    unique_checks = [
        check(f"conflicting_{label}", gx.expectations.ExpectColumnValuesToBeInSet, column="label_consistent", value_set=[True]),
        check("duplicate_" + "_".join(key), gx.expectations.ExpectColumnValuesToBeInSet, column="first_of_key", value_set=[True]),
    ]
    kept, duplicates = _split(survivors, run_suite(survivors, f"{name}_unique", unique_checks))
    return kept, pd.concat([rejected, duplicates], ignore_index=True)


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


def listing_checks(settings: ValidateSettings) -> list[Expectation]:
    known = AMAZON_GENRES if settings.genre_set == "book32" else BOOKCOVER30_GENRES
    return [
        *listing_text_checks(settings),
        check("genre_missing", gx.expectations.ExpectColumnValuesToNotBeNull, column="genre"),
        check("genre_unknown", gx.expectations.ExpectColumnValuesToBeInSet, column="genre", value_set=list(known)),
    ]


def _with_row_ids(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True).copy()
    frame["row_id"] = range(len(frame))
    frame["parse_ok"] = frame["parse_error"].isna()
    text_cells = [frame[column].fillna("").astype(str) for column in ("title", "author")]
    frame["formula_free"] = ~np.logical_or.reduce([cells.str.match(FORMULA_LIKE) for cells in text_cells])
    return frame


def require_columns(frame: pd.DataFrame, name: str, columns: list[str]) -> None:
    """Table-level check before any row-level one: the columns the stage reads are all there."""
    run_suite(frame.head(0), f"{name}_table", [
        check("columns_missing", gx.expectations.ExpectTableColumnsToMatchSet, column_set=columns, exact_match=False),
    ])


def validate_listing(frame: pd.DataFrame, settings: ValidateSettings) -> TableOutcome:
    require_columns(frame, "listing", LISTING_COLUMNS)
    frame = _with_row_ids(frame)
    kept, quarantined = _check_rows_then_uniqueness(frame, "listing", listing_checks(settings), ["book_id"], "genre")
    # The same book listed twice under different ids would leak between CV folds and the test split.
    kept, title_duplicates = _split(kept, _duplicate_title_flags(kept))
    kept, rare = _split(kept, _rare_genre_flags(kept, settings.min_rows_per_genre))
    quarantined = pd.concat([quarantined, title_duplicates, rare], ignore_index=True)
    quarantined["label"] = quarantined["genre"]
    clean = kept[["book_id", "title", "author", "genre"]].copy()
    clean["author"] = clean["author"].fillna("")
    return _outcome("listing", frame, clean, quarantined)


def validate_unlabeled_listing(frame: pd.DataFrame, settings: ValidateSettings) -> TableOutcome:
    """A listing to classify: the listing suite's row checks, without the genre's (it has none yet)
    or the uniqueness ones (a repeated book is classified as often as it is listed)."""
    require_columns(frame, "listing", LISTING_COLUMNS)
    frame = _with_row_ids(frame)
    kept, quarantined = _split(frame, run_suite(frame, "unlabeled_listing_rows", listing_text_checks(settings)))
    clean = kept[["source_row", "book_id", "title", "author"]].assign(author=kept["author"].fillna(""))
    return _outcome("listing", frame, clean, quarantined)


def _duplicate_title_flags(kept: pd.DataFrame) -> dict[int, list[str]]:
    """Same normalised title and author as an earlier row; a row without author also repeats any
    authored row of the same title (the Category,Title table re-lists books the Amazon files have)."""
    kept = kept.copy()
    title, author = normalized_text(kept["title"]), normalized_text(kept["author"])
    kept["title_norm"], kept["author_norm"] = title, author
    first_of_pair = ~kept.duplicated(subset=["title_norm", "author_norm"], keep="first")
    authored_titles = set(title[author != ""])
    kept["first_of_title"] = first_of_pair & ((author != "") | ~title.isin(authored_titles))
    duplicate = check("duplicate_title", gx.expectations.ExpectColumnValuesToBeInSet, column="first_of_title", value_set=[True])
    return run_suite(kept, "listing_titles", [duplicate])


def _rare_genre_flags(kept: pd.DataFrame, min_rows: int) -> dict[int, list[str]]:
    """Genres too rare to cross-validate (a stratified fold needs rows of every class)."""
    kept = kept.copy()
    kept["genre_rows"] = kept.groupby("genre")["genre"].transform("size")
    rare = check("genre_too_rare", gx.expectations.ExpectColumnValuesToBeBetween, column="genre_rows", min_value=min_rows)
    return run_suite(kept, "listing_genres", [rare])


def cover_checks(settings: ValidateSettings, covers_format: str) -> list[Expectation]:
    checks = [
        check("unparseable_row", gx.expectations.ExpectColumnValuesToBeInSet, column="parse_ok", value_set=[True]),
        check("formula_like_cell", gx.expectations.ExpectColumnValuesToBeInSet, column="formula_free", value_set=[True]),
        check("book_id_missing", gx.expectations.ExpectColumnValuesToNotBeNull, column="book_id"),
        check("title_empty", gx.expectations.ExpectColumnValuesToNotBeNull, column="title"),
        check("title_too_long", gx.expectations.ExpectColumnValueLengthsToBeBetween, column="title", min_value=1, max_value=settings.title_max_chars),
        check("image_path_missing", gx.expectations.ExpectColumnValuesToNotBeNull, column="image_ref"),
        check("image_outside_root", gx.expectations.ExpectColumnValuesToBeInSet, column="image_inside_root", value_set=[True]),
        check("image_missing", gx.expectations.ExpectColumnValuesToBeInSet, column="image_exists", value_set=[True]),
        check("image_undecodable", gx.expectations.ExpectColumnValuesToBeInSet, column="image_decodes", value_set=[True]),
        check("image_too_large", gx.expectations.ExpectColumnValuesToBeBetween, column="image_pixels", max_value=settings.max_image_pixels),
        check("image_too_small", gx.expectations.ExpectColumnValuesToBeBetween, column="image_min_side", min_value=settings.min_image_side),
    ]
    if covers_format == "bookdepository":
        checks.append(check("category_unknown", gx.expectations.ExpectColumnValuesToBeInSet, column="category",
                            value_set=list(BOOKDEPOSITORY_CATEGORIES)))
    return checks


def _add_image_facts(frame: pd.DataFrame, settings: ValidateSettings, engine: EngineSettings,
                     runtime: RuntimeSettings | None) -> pd.DataFrame:
    has_ref = frame["image_ref"].notna()
    roots, refs = frame.loc[has_ref, "image_root"].tolist(), frame.loc[has_ref, "image_ref"].tolist()
    facts = facts_table(probe_images(roots, refs, settings.max_image_pixels, engine, runtime))
    frame = frame.assign(image_inside_root=True, image_exists=True, image_decodes=True, image_min_side=settings.min_image_side,
                         image_pixels=0, image_error=None, image_path=None)
    if has_ref.any():
        frame.loc[has_ref, "image_inside_root"] = facts["inside_root"]
        frame.loc[has_ref, "image_exists"] = facts["exists"]
        frame.loc[has_ref, "image_decodes"] = facts["decodes"]
        frame.loc[has_ref, "image_min_side"] = [
            min(w, h) if error == "" else settings.min_image_side
            for w, h, error in zip(facts["width"], facts["height"], facts["error"])
        ]
        frame.loc[has_ref, "image_pixels"] = facts["width"].astype(np.int64) * facts["height"].astype(np.int64)
        frame.loc[has_ref, "image_error"] = [error or None for error in facts["error"]]
        frame.loc[has_ref, "image_path"] = [project_relative(Path(p)) for p in facts["path"]]
    return frame


def validate_covers(frame: pd.DataFrame, covers_format: str, settings: ValidateSettings, engine: EngineSettings = IN_PROCESS,
                    runtime: RuntimeSettings | None = None) -> TableOutcome:
    require_columns(frame, "covers", COVER_COLUMNS)
    frame = _add_image_facts(_with_row_ids(frame), settings, engine, runtime)
    kept, quarantined = _check_rows_then_uniqueness(
        frame, "covers", cover_checks(settings, covers_format), ["book_id", "category"], "image_ref"
    )
    quarantined["label"] = quarantined["category"]
    clean = kept[["book_id", "title", "author", "category", "image_path"]].copy()
    clean["author"] = clean["author"].fillna("")
    clean["category"] = clean["category"].fillna("")
    return _outcome("covers", frame, clean, quarantined)


def _outcome(name: str, frame: pd.DataFrame, clean: pd.DataFrame, quarantined: pd.DataFrame) -> TableOutcome:
    quarantined = quarantined.copy()
    quarantined["table"] = name
    detail = quarantined["parse_error"].astype("object")
    if "image_error" in quarantined:
        detail = detail.fillna(quarantined["image_error"])
    quarantined["detail"] = detail
    for column in QUARANTINE_COLUMNS:
        if column not in quarantined:
            quarantined[column] = None
    reasons = Counter(reason for joined in quarantined["reason"] for reason in joined.split(";"))
    if len(clean) + len(quarantined) != len(frame):
        raise AssertionError(f"{name}: {len(frame)} rows in but {len(clean)} kept + {len(quarantined)} quarantined")
    return TableOutcome(name, clean.reset_index(drop=True), quarantined[QUARANTINE_COLUMNS], len(frame), dict(reasons))


def quarantine_summary(outcomes: list[TableOutcome], examples: int = 5) -> str:
    """A page a person reads first: how much was set aside, why, and a few rows of each reason."""
    lines = ["# Quarantine summary", ""]
    for outcome in outcomes:
        s = outcome.summary()
        lines.append(f"## {outcome.name}: {s['rows_in']} rows in, {s['rows_kept']} kept, {s['rows_quarantined']} quarantined")
        lines.append("")
        if not outcome.by_reason:
            lines += ["Nothing quarantined.", ""]
            continue
        lines += ["| reason | rows | examples (file:row) |", "|---|---|---|"]
        reasons = outcome.quarantined["reason"].str.split(";")
        for reason, count in sorted(outcome.by_reason.items(), key=lambda item: -item[1]):
            rows = outcome.quarantined[[reason in row_reasons for row_reasons in reasons]].head(examples)
            where = ", ".join(f"{Path(str(f)).name}:{r}" for f, r in zip(rows["source_file"], rows["source_row"]))
            lines.append(f"| {reason} | {count} | {where} |")
        lines.append("")
    return "\n".join(lines)


def write_outputs(settings: Settings, listing: TableOutcome, covers: TableOutcome, data_source: str) -> dict[str, object]:
    paths = settings.paths
    for target in (paths.clean_listing, paths.clean_covers, paths.quarantine, paths.quarantine_summary, paths.metrics_dir):
        (target if target.suffix == "" else target.parent).mkdir(parents=True, exist_ok=True)
    listing.kept.to_parquet(paths.clean_listing, index=False)
    covers.kept.to_parquet(paths.clean_covers, index=False)
    quarantine = pd.concat([listing.quarantined, covers.quarantined], ignore_index=True).astype({"source_row": "Int64"})
    for column in QUARANTINE_COLUMNS:
        if column != "source_row":
            quarantine[column] = quarantine[column].astype("string")
    quarantine.to_parquet(paths.quarantine, index=False)
    paths.quarantine_summary.write_text(quarantine_summary([listing, covers]), encoding="utf-8")
    metrics = {"data_source": data_source, "listing": listing.summary(), "covers": covers.summary()}
    write_json(paths.metrics_dir / "validation.json", metrics)
    return metrics


def enforce_threshold(outcomes: list[TableOutcome], max_fraction: float, summary_path: Path) -> None:
    for outcome in outcomes:
        share = len(outcome.quarantined) / outcome.rows_in if outcome.rows_in else 1.0
        if outcome.rows_in == 0 or share > max_fraction:
            top = ", ".join(f"{reason} ({count})" for reason, count in Counter(outcome.by_reason).most_common(3))
            raise DataQualityError(
                f"{outcome.name}: {len(outcome.quarantined)} of {outcome.rows_in} rows quarantined "
                f"({share:.1%} > validate.max_quarantine_fraction={max_fraction:.1%}); main reasons: {top or 'no rows'}. "
                f"See {summary_path} and fix the input, or raise the threshold in params.yaml."
            )


@task(name="validate-and-clean", cache_policy=NO_CACHE)
def validate_and_clean(settings: Settings) -> dict[str, object]:
    """Read both inputs, validate, write clean Parquet + quarantine; fail above the threshold."""
    ensure_tracking_reachable()
    data = settings.data
    root = data.source_root()
    if data.uses_fallback():
        log.warning("data.root %s does not exist; reading the embedded generated data in %s instead", data.root, root)
    listing = validate_listing(read_listings(root, data.listings, data.listing_format), settings.validate_)
    covers_frame, covers_format = read_covers(root / data.covers, data.covers_format)
    covers = validate_covers(covers_frame, covers_format, settings.validate_, settings.engine, settings.runtime)
    metrics = write_outputs(settings, listing, covers, data.source_label())
    log.info("listing: %s; covers: %s", listing.summary(), covers.summary())
    paths = settings.paths
    figures = {f"{o.name}_{k}": o.summary()[k] for o in (listing, covers) for k in ("rows_in", "rows_kept", "rows_quarantined")}
    metrics["mlflow_run_id"] = log_stage_run(
        settings.mlflow.experiment, "validate-clean", {"clean_listing": paths.clean_listing, "clean_covers": paths.clean_covers},
        figures, [paths.quarantine, paths.quarantine_summary, paths.metrics_dir / "validation.json"], data.source_label(),
    )
    enforce_threshold([listing, covers], settings.validate_.max_quarantine_fraction, settings.paths.quarantine_summary)
    return metrics
