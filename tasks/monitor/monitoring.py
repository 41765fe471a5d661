"""The drift monitor: each new batch against the reference the champions were judged on.

A batch is a `bookcovers classify` output (title, author, predicted genre and probability) or an
`add-covers` batch (its covers' pixels, their CLIP embeddings in the index, their titles and
predicted genres). The references:
- listings: a sample of the classifier champion's held-out test split (logged with the champion's
  training run), predicted by the champion: data of the training distribution that the model never
  saw, so its probabilities are what a new batch of the same kind should get (the training rows'
  own probabilities would be higher and make every new batch look drifted);
- covers: a sample of the covers the pipeline indexed (not the added batches), with their
  embeddings from the index and the genres the labeling stage gave them.
Each report is an HTML page, a JSON file and an MLflow run; tasks/monitor/drift.py decides.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.genre.champion import champion_test_split
from tasks.genre.labeling import load_champion_classifier
from tasks.monitor.drift import DriftReport, DriftThresholds, covers_drift, image_features, listing_drift
from tasks.monitor.report import report_html, report_markdown
from tasks.platform.sections import MonitorSettings
from tasks.platform.errors import DataQualityError, InputFileError, UserError, require_inputs
from tasks.platform.outputs import write_json
from tasks.platform.settings import Settings
from tasks.platform.tracking import client, log_stage_run

log = logging.getLogger(__name__)

LISTING_COLUMNS = ["title", "author", "genre", "probability"]
SAMPLE_SEED = 0


@dataclass(frozen=True)
class Batch:
    kind: str  # "listing" (a classify output) | "covers" (an add-covers batch folder)
    path: Path
    name: str  # the report's file stem

    @classmethod
    def at(cls, path: Path | str) -> Batch:
        path = Path(path)
        if (path / "books.parquet").is_file():
            return cls("covers", path, f"covers-{path.name}")
        if path.is_file() and path.suffix.lower() in {".csv", ".parquet"}:
            return cls("listing", path, f"listing-{path.name.rsplit('.', 1)[0]}")
        raise InputFileError(f"{path}: not a batch to monitor; give a `bookcovers classify` output (.csv or .parquet) "
                             "or an add-covers batch folder (add_covers.batches_dir/NNNN-...)")


def thresholds(monitor: MonitorSettings) -> DriftThresholds:
    return DriftThresholds(monitor.p_value, monitor.numeric_effect, monitor.category_effect, monitor.embedding_auc)


def unreported_batches(settings: Settings) -> list[Batch]:
    """What a scheduled run monitors: every classify output and added batch that has no report yet."""
    listings = sorted(p for p in Path(settings.classify.output_dir).glob("*") if p.suffix in {".csv", ".parquet"}
                      and not p.name.endswith((".quarantine.csv", ".covers-quarantine.csv")))
    batches = sorted(p for p in Path(settings.add_covers.batches_dir).glob("*") if (p / "books.parquet").is_file())
    found = [Batch.at(path) for path in [*listings, *batches]]
    return [batch for batch in found if not (settings.monitor.reports_dir / f"{batch.name}.drift.json").is_file()]


def sampled_predictions(path: Path, rows: int, chunk_rows: int = 200_000) -> pd.DataFrame:
    """A uniform sample of a predictions file of any size, read a chunk at a time: memory holds `rows` plus one chunk."""
    rng = np.random.default_rng(SAMPLE_SEED)
    chunks = (pq.ParquetFile(path).iter_batches(chunk_rows) if path.suffix.lower() == ".parquet"
              else pd.read_csv(path, chunksize=chunk_rows, dtype={"author": "string", "title": "string"}, keep_default_na=False))
    kept, offset = pd.DataFrame(columns=[*LISTING_COLUMNS, "_key"]), 0
    for chunk in chunks:
        frame = chunk.to_pandas() if hasattr(chunk, "to_pandas") else chunk
        missing = [c for c in LISTING_COLUMNS if c not in frame]
        if missing:
            raise InputFileError(f"{path}: no {', '.join(missing)} column; the monitor reads what `bookcovers classify` writes")
        frame = frame[LISTING_COLUMNS].set_axis(pd.RangeIndex(offset, offset + len(frame))).assign(_key=rng.random(len(frame)))
        offset += len(frame)
        kept = pd.concat([kept, frame]) if len(kept) else frame
        kept = kept.nsmallest(rows, "_key")
    return kept.drop(columns="_key").sort_index().reset_index(drop=True)  # a uniform sample, in file order


def listing_reference(settings: Settings) -> tuple[pd.DataFrame, str]:
    """The champion's held-out test split, predicted by the champion; cached per champion version."""
    registry, monitor = settings.mlflow, settings.monitor
    model, _, version = load_champion_classifier(settings)
    cache = monitor.reports_dir / "reference" / f"classifier-v{version}-{monitor.reference_rows}.parquet"
    if cache.is_file():
        return pd.read_parquet(cache), str(version)
    test = champion_test_split(client(), registry.classifier_model_name, str(version))
    if test is None or test.empty:
        raise DataQualityError(f"{registry.classifier_model_name} v{version} has no readable test split to monitor against; "
                               "retrain it (the train_classifier stage logs one)")
    test = test.sample(min(len(test), monitor.reference_rows), random_state=SAMPLE_SEED).reset_index(drop=True)
    predicted = model.predict(test[["title", "author"]])
    reference = test[["title", "author"]].assign(genre=predicted["genre"].to_numpy(),
                                                 probability=predicted["probability"].astype(float).to_numpy())
    cache.parent.mkdir(parents=True, exist_ok=True)
    reference.to_parquet(cache, index=False)
    return reference, str(version)


def index_parts(index: Path) -> tuple[dict[str, object], pd.DataFrame, np.ndarray, dict[str, slice]]:
    """The index's books and image embeddings, and which rows are the pipeline's and each added batch's."""
    require_inputs("index_covers", index / "index.json")
    info = json.loads((index / "index.json").read_text(encoding="utf-8"))
    books, images = pd.read_parquet(index / "books.parquet"), np.load(index / "images.npy", mmap_mode="r")
    start = len(books) - sum(int(b["covers"]) for b in info.get("batches", []))
    rows = {"pipeline": slice(0, start)}
    for batch in info.get("batches", []):
        rows[str(batch["id"])] = slice(start, start + int(batch["covers"]))
        start += int(batch["covers"])
    return info, books, images, rows


def cover_side(books: pd.DataFrame, images: np.ndarray, rows: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    picked = books.iloc[rows]
    listing = picked[[c for c in ("title", "author", "genre", "read_text") if c in picked]].assign(
        probability=picked["genre_probability"].to_numpy() if "genre_probability" in picked else np.nan)
    return image_features(picked["image_path"].tolist()), np.asarray(images[rows]), listing.reset_index(drop=True)


def covers_report(settings: Settings, batch: Batch) -> tuple[DriftReport, dict[str, str]]:
    info, books, images, rows = index_parts(settings.paths.cover_index)
    if batch.path.name not in rows:
        raise InputFileError(f"{batch.path}: this batch is not in the cover index {settings.paths.cover_index} "
                             "(a rebuild from other data?); add it again with `bookcovers add-covers`")
    pipeline = np.arange(rows["pipeline"].start, rows["pipeline"].stop)
    rng = np.random.default_rng(SAMPLE_SEED)
    reference_rows = np.sort(rng.choice(pipeline, min(len(pipeline), settings.monitor.reference_covers), replace=False))
    batch_rows = np.arange(rows[batch.path.name].start, rows[batch.path.name].stop)
    reference, new = cover_side(books, images, reference_rows), cover_side(books, images, batch_rows)
    with_probability = not (reference[2]["probability"].isna().all() or new[2]["probability"].isna().all())
    report = covers_drift(reference[0], new[0], reference[1], new[1],
                          reference[2] if with_probability else reference[2].drop(columns="probability"),
                          new[2] if with_probability else new[2].drop(columns="probability"), thresholds(settings.monitor))
    return report, {"batch": str(batch.path), "CLIP": f"{info.get('model')} v{info.get('version')}",
                    "reference": f"{len(reference_rows)} covers the pipeline indexed"}


def listing_report(settings: Settings, batch: Batch) -> tuple[DriftReport, dict[str, str]]:
    reference, version = listing_reference(settings)
    new = sampled_predictions(batch.path, settings.monitor.batch_sample_rows)
    report = listing_drift(reference, new, thresholds(settings.monitor))
    return report, {"batch": str(batch.path), "classifier": f"{settings.mlflow.classifier_model_name} v{version}",
                    "reference": f"{len(reference)} rows of the champion's held-out test split"}


@task(name="drift-report", cache_policy=NO_CACHE)
def monitor_batch(settings: Settings, batch: Batch) -> dict[str, object]:
    """One batch's drift report: HTML + JSON in monitor.reports_dir and an MLflow run; the verdict in the summary."""
    try:
        report, details = (covers_report if batch.kind == "covers" else listing_report)(settings, batch)
    except ValueError as error:  # the drift code's "empty batch": nothing to compare is a fact, not a crash
        if isinstance(error, InputFileError):
            raise
        raise DataQualityError(f"{batch.path}: nothing to monitor ({error})") from error
    folder = settings.monitor.reports_dir
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / f"{batch.name}.drift.html"
    html.write_text(report_html(report, f"Drift of {batch.path.name}", details), encoding="utf-8")
    summary = {"batch": str(batch.path), "kind": batch.kind, **report.as_dict(), "html": str(html.resolve()), "details": details}
    json_file = write_json(folder / f"{batch.name}.drift.json", summary)
    metrics = {"drifted_measures": len(report.drifted), "batch_rows": report.batch_rows, "reference_rows": report.reference_rows}
    metrics |= {f"effect.{m.name.replace(' ', '_')}": m.effect for m in report.measures if np.isfinite(m.effect)}
    summary["mlflow_run_id"] = log_stage_run(settings.mlflow.experiment, "drift-report", {}, metrics, [html, json_file])
    summary["markdown"] = report_markdown(report, f"Drift of {batch.path.name}")
    log.info("%s: %s (report: %s)", batch.path, report.verdict, html)
    return summary


class DriftDetected(UserError):
    """A batch drifted and monitor.on_drift is "fail": the run fails with the verdict as its message."""


def flag_verdict(reports: list[dict[str, object]], monitor: MonitorSettings) -> str | None:
    """The one line a flagged run shows, or None when no report has monitor.flag_at_measures drifted measures."""
    flagged = [r for r in reports if len(r["drifted"]) >= monitor.flag_at_measures]  # type: ignore[arg-type]
    return "; ".join(f"{Path(str(r['batch'])).name}: {r['verdict']}" for r in flagged) or None


def start_retraining(deployment: str = "book-covers-pipeline/book-covers-pipeline") -> str:
    """Start the pipeline deployment (`make ui` serves it) without waiting; say what happened either way."""
    from prefect.deployments import run_deployment

    try:
        run = run_deployment(deployment, timeout=0)
    except Exception as error:  # noqa: BLE001  no server, no such deployment: the drift verdict still stands
        log.warning("drift asked for retraining, but %s could not be started (%s); `make ui` serves it", deployment, error)
        return f"not started: {type(error).__name__}"
    log.info("drift: started %s (flow run %s)", deployment, run.id)
    return str(run.id)
