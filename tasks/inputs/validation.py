"""Validate and clean the listing and the covers with Great Expectations suites (tasks/inputs/suites.py).

Every row a suite flags goes to the quarantine with all its reasons, every other row is kept,
so rows in = rows kept + rows quarantined by construction. Uniqueness is checked over the rows
that passed the row checks, so a broken row never knocks out a good duplicate of itself.

A listing of more than `engine.chunk_rows` rows is validated in parts on the data engine
(tasks/inputs/listing_parts.py): the same rules and the same rows out, with memory bounded by
the part, not by the listing.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.expectations import Expectation
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.inputs.images import facts_table, probe_images
from tasks.inputs.listing_parts import listing_frames, listing_row_flags, settle_listing_rows, validate_listing_parts
from tasks.inputs.outcomes import Outcome, TableOutcome, enforce_threshold, make_outcome, write_outputs
from tasks.inputs.readers import COVER_COLUMNS, LISTING_COLUMNS, project_relative, read_covers, resolve_listing_paths
from tasks.inputs.suites import (
    check,
    listing_keys,
    listing_text_checks,
    listing_uniqueness_flags,
    require_columns,
    run_suite,
    split,
    unique_key_flags,
    with_row_ids,
)
from tasks.inputs.taxonomy import BOOKDEPOSITORY_CATEGORIES
from tasks.platform.engine import IN_PROCESS
from tasks.platform.settings import DataSettings, EngineSettings, RuntimeSettings, Settings, ValidateSettings
from tasks.platform.tracking import ensure_tracking_reachable, log_stage_run

log = logging.getLogger(__name__)


def _check_rows_then_uniqueness(
    frame: pd.DataFrame, name: str, row_checks: list[Expectation], key: list[str], label: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    survivors, rejected = split(frame, run_suite(frame, f"{name}_rows", row_checks))
    kept, duplicates = split(survivors, unique_key_flags(survivors, key, label))
    return kept, pd.concat([rejected, duplicates], ignore_index=True)


def validate_listing(frame: pd.DataFrame, settings: ValidateSettings) -> TableOutcome:
    """A listing held in memory: row checks, then uniqueness on the survivors' keys."""
    require_columns(frame, "listing", LISTING_COLUMNS)
    frame = with_row_ids(frame)
    flags = listing_row_flags(frame, settings)
    survivors = frame[~frame["row_id"].isin(flags.keys())]
    flags.update(listing_uniqueness_flags(listing_keys(survivors, settings), settings.min_rows_per_genre))
    clean, quarantined = settle_listing_rows(frame, flags)
    return make_outcome("listing", frame, clean, quarantined)


def validate_listing_files(paths: list[Path], listing_format: str, settings: ValidateSettings, engine: EngineSettings,
                           runtime: RuntimeSettings | None, work_dir: Path) -> Outcome:
    """The listing files read as a stream: held in memory when they fit in one part of `engine.chunk_rows`
    rows, otherwise validated in parts on the engine, written under `work_dir`."""
    frames = listing_frames(paths, listing_format, engine.chunk_rows)
    first = next(frames)
    second = next(frames, None)
    if second is None:
        log.info("read %d listing rows from %d file(s)", len(first), len(paths))
        return validate_listing(first, settings)
    require_columns(first, "listing", LISTING_COLUMNS)
    return validate_listing_parts(chain([first, second], frames), settings, engine, runtime, work_dir)


def validate_unlabeled_listing(frame: pd.DataFrame, settings: ValidateSettings) -> TableOutcome:
    """A listing to classify: the listing suite's row checks, without the genre's (it has none yet)
    or the uniqueness ones (a repeated book is classified as often as it is listed)."""
    require_columns(frame, "listing", LISTING_COLUMNS)
    frame = with_row_ids(frame)
    kept, quarantined = split(frame, run_suite(frame, "unlabeled_listing_rows", listing_text_checks(settings)))
    clean = kept[["source_row", "book_id", "title", "author"]].assign(author=kept["author"].fillna(""))
    return make_outcome("listing", frame, clean, quarantined)


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
    frame = _add_image_facts(with_row_ids(frame), settings, engine, runtime)
    kept, quarantined = _check_rows_then_uniqueness(
        frame, "covers", cover_checks(settings, covers_format), ["book_id", "category"], "image_ref"
    )
    quarantined["label"] = quarantined["category"]
    clean = kept[["book_id", "title", "author", "category", "image_path"]].copy()
    clean["author"] = clean["author"].fillna("")
    clean["category"] = clean["category"].fillna("")
    return make_outcome("covers", frame, clean, quarantined)


@contextmanager
def scratch_folder(near: Path) -> Iterator[Path]:
    """A folder for a stage's parts beside its outputs (on the filesystem a cluster's workers share), removed after."""
    near.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".parts-", dir=near) as folder:
        yield Path(folder).absolute()


def _validate_inputs(settings: Settings, data: DataSettings, work_dir: Path) -> tuple[Outcome, TableOutcome]:
    root = data.source_root()
    listing = validate_listing_files(resolve_listing_paths(root, data.listings), data.listing_format, settings.validate_,
                                     settings.engine, settings.runtime, work_dir)
    covers_frame, covers_format = read_covers(root / data.covers, data.covers_format)
    covers = validate_covers(covers_frame, covers_format, settings.validate_, settings.engine, settings.runtime)
    return listing, covers


@task(name="validate-and-clean", cache_policy=NO_CACHE)
def validate_and_clean(settings: Settings) -> dict[str, object]:
    """Read both inputs, validate, write clean Parquet + quarantine; fail above the threshold."""
    ensure_tracking_reachable()
    data = settings.data
    if data.uses_fallback():
        log.warning("data.root %s does not exist; reading the embedded generated data in %s instead", data.root, data.source_root())
    paths = settings.paths
    with scratch_folder(paths.quarantine.parent) as work_dir:
        listing, covers = _validate_inputs(settings, data, work_dir)
        metrics = write_outputs(settings, listing, covers, data.source_label())
    log.info("listing: %s; covers: %s", listing.summary(), covers.summary())
    figures = {f"{o.name}_{k}": o.summary()[k] for o in (listing, covers) for k in ("rows_in", "rows_kept", "rows_quarantined")}
    metrics["mlflow_run_id"] = log_stage_run(
        settings.mlflow.experiment, "validate-clean", {"clean_listing": paths.clean_listing, "clean_covers": paths.clean_covers},
        figures, [paths.quarantine, paths.quarantine_summary, paths.metrics_dir / "validation.json"], data.source_label(),
    )
    enforce_threshold([listing, covers], settings.validate_.max_quarantine_fraction, paths.quarantine_summary)
    return metrics
