"""Train the title + author -> genre candidates, pick one by cross-validation, guard the champion.

The candidates are the book-cover paper's (Naive Bayes, Logistic Regression, Random Forest), a
linear SVM on word + character n-grams, and a logistic head on MiniLM sentence embeddings; the
two best are also tried as an ensemble. Selection uses CV on the training split only, on a genre-
balanced metric because the benchmark's test split is balanced while real listings are not. The
held-out test split is assigned by a hash of the normalised title, so it stays the same book set
when the listing grows and a challenger and the champion are scored on equal terms.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import logging
import resource
import time

import mlflow
import numpy as np
import pandas as pd
import psutil
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.model_selection import StratifiedGroupKFold, train_test_split
from tqdm import tqdm

from tasks.genre.champion import export_champion, identity_tags, judge, log_test_split
from tasks.genre.features import (
    FeatureBlocks,
    author_tokens,  # noqa: F401  champions registered before 2026-11 unpickle it from here
    stack_blocks,
)
from tasks.genre.models import EnsembleModel, GenreModel, PriorShiftedModel, candidate_specs
from tasks.genre.pyfunc import GenreClassifierModel, classifier_frame
from tasks.genre.report import per_class_table, write_reports
from tasks.genre.selection import (
    CandidateResult,
    CvData,
    choose_winner,
    ensemble_of_best_two,
    label_scores,
    probability_scores,
    search,
    shift_toward_balance,
)
from tasks.inputs.readers import normalized_text
from tasks.inputs.taxonomy import AMAZON_GENRES, BOOKCOVER30_GENRES
from tasks.platform.errors import DataQualityError, require_inputs
from tasks.platform.outputs import write_json
from tasks.platform.registry import register_version, version_description
from tasks.platform.settings import ClassifierSettings, Settings
from tasks.platform.tracking import (
    client,
    content_fingerprint,
    ensure_tracking_reachable,
    file_md5,
    lineage_tags,
    tasks_package_dir,
    tracked_run,
)

log = logging.getLogger(__name__)

MODEL_PIP_REQUIREMENTS = ["scikit-learn", "pandas", "numpy", "scipy", "mlflow", "tokenizers"]
LABEL_SETS = {"bookcover30": BOOKCOVER30_GENRES, "book32": AMAZON_GENRES}


def is_test_book(title_key: str, test_fraction: float) -> bool:
    """Stable membership of the held-out split: a hash of the normalised title, not a random draw.

    Hashing the title rather than the id keeps every edition and re-listing of a title on one side.
    """
    bucket = int(hashlib.md5(str(title_key).encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < test_fraction


def split_listing(listing: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    in_test = normalized_text(listing["title"]).map(lambda key: is_test_book(key, test_fraction))
    return listing[~in_test].reset_index(drop=True), listing[in_test].reset_index(drop=True)


def restrict_to_label_set(listing: pd.DataFrame, label_set: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows whose genre is outside the label set are left out of training, and counted per genre."""
    if label_set == "all":
        return listing, {}
    inside = listing["genre"].isin(LABEL_SETS[label_set])
    left_out = listing.loc[~inside, "genre"].value_counts().to_dict()
    if not inside.any():
        raise DataQualityError(f"no listing row has a genre of the {label_set} label set (found {sorted(left_out)[:5]}...); "
                               "set classifier.label_set=all to train on the listing's own genres")
    return listing[inside].reset_index(drop=True), {str(k): int(v) for k, v in left_out.items()}


def rss_gib() -> float:
    return psutil.Process().memory_info().rss / 2**30


def peak_rss_gib() -> float:
    """This process's peak resident memory (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def release_freed_memory() -> None:
    """Hand memory freed by the sentence encoder back to the OS before the candidates start.

    glibc keeps freed heap pages for reuse; without this the process carries the transformer's
    working memory through the whole search. A no-op where glibc is absent.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cv_rows(train: pd.DataFrame, settings: ClassifierSettings) -> np.ndarray:
    """Row positions CV runs on: all of them, or a genre-stratified sample of `cv_max_rows`."""
    positions = np.arange(len(train))
    if len(train) <= settings.cv_max_rows:
        return positions
    sample, _ = train_test_split(positions, train_size=settings.cv_max_rows, stratify=train["genre"], random_state=settings.seed)
    return np.sort(sample)


def cv_data(train: pd.DataFrame, matrices: dict[str, object], classes: list[str], settings: ClassifierSettings) -> CvData:
    rows = cv_rows(train, settings)
    labels = pd.Categorical(train["genre"].iloc[rows], categories=classes).codes.astype(np.int64)
    folds = StratifiedGroupKFold(settings.cv_folds, shuffle=True, random_state=settings.seed)
    groups = normalized_text(train["title"].iloc[rows]).to_numpy()
    try:
        split = list(folds.split(np.zeros(len(rows)), labels, groups))
    except ValueError as error:
        raise DataQualityError(f"the training split cannot be cut into {settings.cv_folds} CV folds: {error}") from error
    return CvData({name: matrix[rows] for name, matrix in matrices.items()}, labels, split, len(classes))


def _final_model(result: CandidateResult, settings: ClassifierSettings, blocks: FeatureBlocks,
                 matrices: dict[str, object], labels: np.ndarray, classes: list[str],
                 results: dict[str, CandidateResult], fitted: dict[str, GenreModel]) -> GenreModel | EnsembleModel:
    """Refit a candidate on every training row (both members, for the ensemble; each fitted once, kept in `fitted`)."""
    if result.members:
        first, second = (_final_model(results[name], settings, blocks, matrices, labels, classes, results, fitted)
                         for name in result.members)
        return EnsembleModel((first, second), result.ensemble_weight, result.temperature)
    if result.name not in fitted:
        started = time.perf_counter()
        spec = candidate_specs(settings)[result.name]
        estimator = spec.build(result.best(settings.select_metric).params, settings)
        estimator.fit(stack_blocks(matrices, spec.blocks), labels)
        fitted[result.name] = GenreModel(result.name, blocks.subset(spec.blocks), estimator, classes, result.temperature)
        result.final_fit_seconds = time.perf_counter() - started
    return fitted[result.name]


def final_models_on_test(winner: CandidateResult, contenders: list[CandidateResult], settings: ClassifierSettings,
                         blocks: FeatureBlocks, matrices: dict[str, object], labels: np.ndarray, classes: list[str],
                         test: pd.DataFrame, log_prior: np.ndarray) -> tuple[GenreModel | EnsembleModel | PriorShiftedModel,
                                                                              dict[str, dict[str, float]], np.ndarray]:
    """Every contender refitted on the whole training split and scored on the test split, so the
    README and metrics show each one's test figures beside its CV figures, not the winner's alone.

    Only the winner (and its members) stay in memory: the others are dropped once scored.
    """
    results, fitted, test_scores = {r.name: r for r in contenders}, {}, {}
    keep = {winner.name, *winner.members}
    for result in tqdm(contenders, desc="test split", unit="model"):
        model = _final_model(result, settings, blocks, matrices, labels, classes, results, fitted)
        if result.prior_shift:
            model = PriorShiftedModel(model, log_prior, result.prior_shift)
        test_scores[result.name], predicted = score_on_test(model, test)
        if result is winner:
            winner_model, winner_predicted = model, predicted
        for name in [name for name in fitted if name not in keep]:
            del fitted[name]
    return winner_model, test_scores, winner_predicted


def score_on_test(model: GenreModel | EnsembleModel | PriorShiftedModel, test: pd.DataFrame) -> tuple[dict[str, float], np.ndarray]:
    log_proba = model.log_proba(classifier_frame(test))
    codes = pd.Categorical(test["genre"], categories=model.classes_).codes
    known = codes >= 0  # a genre the training split never saw counts as a miss, not a crash
    predicted = model.classes_[log_proba.argmax(axis=1)]
    scores = label_scores(test["genre"].to_numpy(), predicted)
    scores.update(probability_scores(codes[known], log_proba[known]) if known.any() else {})
    return scores, predicted


def hyperparameters(summary: dict[str, object]) -> dict[str, object]:
    """The winning grid point's settings, flattened for MLflow params."""
    return {f"model.{key}": value for key, value in summary["params"].items()}


def _log_candidate(mlflow_client: MlflowClient, name: str, summary: dict[str, object], parent_run_id: str,
                   experiment: str, tags: dict[str, str]) -> None:
    with tracked_run(experiment, f"candidate-{name}", tags, parent_run_id=parent_run_id) as run_id:
        mlflow_client.log_param(run_id, "candidate", name)
        for key, value in hyperparameters(summary).items():
            mlflow_client.log_param(run_id, key, value)
        for key, value in summary["cv"].items():
            mlflow_client.log_metric(run_id, f"cv_{key}", value)
        for key, value in summary["calibration"].items():
            mlflow_client.log_metric(run_id, f"calibration_{key}", value)
        for key, value in summary.get("test", {}).items():
            mlflow_client.log_metric(run_id, f"test_{key}", value)
        mlflow_client.log_metric(run_id, "search_seconds", summary["search_seconds"])
        mlflow_client.log_dict(run_id, summary["search"], "search.json")


@task(name="train-and-select-classifier", cache_policy=NO_CACHE)
def train_and_select(settings: Settings) -> dict[str, object]:
    cfg, registry = settings.classifier, settings.mlflow
    started = time.perf_counter()
    require_inputs("train_classifier", settings.paths.clean_listing)
    ensure_tracking_reachable()
    listing, left_out = restrict_to_label_set(pd.read_parquet(settings.paths.clean_listing), cfg.label_set)
    train, test = split_listing(listing, cfg.test_fraction)
    if train["genre"].nunique() < 2 or test.empty:
        raise DataQualityError(f"{settings.paths.clean_listing}: need at least two genres and a non-empty test split "
                               f"(have {train['genre'].nunique()} genres, {len(test)} test rows)")
    classes = sorted(train["genre"].unique())
    log.info("classifier: %d train rows, %d test rows, %d genres, %d rows outside the %s label set",
             len(train), len(test), len(classes), sum(left_out.values()), cfg.label_set)
    specs = [candidate_specs(cfg)[name] for name in cfg.candidates]
    block_names = list(dict.fromkeys(name for spec in specs for name in spec.blocks))
    blocks, matrices = FeatureBlocks.fit(classifier_frame(train), block_names, cfg)
    release_freed_memory()
    features_seconds = time.perf_counter() - started
    log.info("features ready in %.1fs; process memory %.2f GiB", features_seconds, rss_gib())
    data = cv_data(train, matrices, classes, cfg)
    results = search(specs, cfg, data)
    ensemble = ensemble_of_best_two(results, cfg, data) if cfg.ensemble else None
    metric = cfg.select_metric
    winner, contenders, left_out_ensemble = choose_winner(results, ensemble, metric)
    labels = pd.Categorical(train["genre"], categories=classes).codes.astype(np.int64)
    log_prior = np.log(np.bincount(labels, minlength=len(classes)) / len(labels))
    if cfg.prior_shift:
        shift_toward_balance(winner, log_prior, data, metric)
    search_seconds = time.perf_counter() - started - features_seconds
    model, test_by_candidate, predicted = final_models_on_test(winner, contenders, cfg, blocks, matrices, labels, classes,
                                                               test, log_prior)
    test_metrics = test_by_candidate[winner.name]
    log.info("selected %s: CV %s %.4f, test %s", winner.name, metric, winner.score(metric), test_metrics)
    summaries = {r.name: r.summary(metric, data.labels) | {"test": test_by_candidate[r.name]} for r in contenders}
    summaries_rejected = {r.name: r.summary(metric, data.labels) | {"kept": False} for r in [left_out_ensemble] if r}
    per_class = per_class_table(test["genre"], predicted, classes)
    report_paths = write_reports(settings.paths.plots_dir, summaries, test["genre"], predicted, classes, per_class)
    mlflow_client = client()
    tags = lineage_tags({"clean_listing": settings.paths.clean_listing}, settings.data.source_label())
    with tracked_run(registry.experiment, "train-classifier", tags) as parent_run_id:
        for name, summary in {**summaries, **summaries_rejected}.items():
            _log_candidate(mlflow_client, name, summary, parent_run_id, registry.experiment, tags)
        outcome = _register_winner(settings, mlflow_client, parent_run_id, winner, model, train, test, test_metrics)
        metrics = {
            "label_set": cfg.label_set, "rows_outside_label_set": left_out,
            "train_rows": len(train), "test_rows": len(test), "cv_rows": len(data.labels), "genres": len(classes),
            "select_metric": metric, "selected": winner.name, "cv": summaries[winner.name]["cv"],
            "test": test_metrics,
            "test_per_class_f1": dict(zip(per_class["genre"], per_class["f1"].astype(float))),
            "candidates": summaries, "rejected": summaries_rejected,
            "seconds": {"features": round(features_seconds, 1), "search": round(search_seconds, 1),
                        "total": round(time.perf_counter() - started, 1)},
            "peak_process_memory_gib": round(peak_rss_gib(), 2),
            "registry": outcome, "mlflow_run_id": parent_run_id,
        }
        for key, value in test_metrics.items():
            mlflow_client.log_metric(parent_run_id, f"test_{key}", value)
        for key, value in metrics["cv"].items():
            mlflow_client.log_metric(parent_run_id, f"cv_{key}", value)
        mlflow_client.log_dict(parent_run_id, metrics, "classifier_metrics.json")
        for path in report_paths:
            mlflow_client.log_artifact(parent_run_id, str(path), "plots")
    settings.paths.metrics_dir.mkdir(parents=True, exist_ok=True)
    write_json(settings.paths.metrics_dir / "classifier.json", metrics)
    return metrics


def _register_winner(settings: Settings, mlflow_client: MlflowClient, run_id: str, winner: CandidateResult,
                     model: GenreModel | EnsembleModel | PriorShiftedModel, train: pd.DataFrame, test: pd.DataFrame,
                     test_metrics: dict[str, float]) -> dict[str, object]:
    cfg, registry = settings.classifier, settings.mlflow
    wrapper = GenreClassifierModel(model)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=wrapper,
            code_paths=[str(tasks_package_dir())], pip_requirements=MODEL_PIP_REQUIREMENTS,
            input_example=test[["title", "author"]].head(3),
        )
    log_test_split(mlflow_client, run_id, test)
    listing_md5 = file_md5(settings.paths.clean_listing)
    cv_score = winner.score(cfg.select_metric)
    description = version_description(
        f"{model.name} (title + author -> genre)",
        data=f"{settings.data.source_label()}: clean listing md5 {listing_md5}, {len(test)} test books, label set {cfg.label_set}",
        metrics=f"CV {cfg.select_metric} {cv_score:.4f}; test " + ", ".join(f"{k} {v:.4f}" for k, v in test_metrics.items()),
        params=cfg.model_dump(mode="json", exclude={"n_jobs"}))
    identity = {"classifier": cfg.model_dump(mode="json", exclude={"n_jobs"}), "model": model.name,
                "test": {key: round(value, 6) for key, value in test_metrics.items()}}
    fingerprint = content_fingerprint(identity, [settings.paths.clean_listing])
    tags = identity_tags(settings.data.source_label(), listing_md5, test, list(model.classes_))
    version = register_version(mlflow_client, registry.classifier_model_name, info.model_uri, description, fingerprint, tags)
    promotion = judge(mlflow_client, registry, cfg.select_metric, version, lambda frame: wrapper.predict(None, frame), tags, test,
                      test_metrics[cfg.select_metric], set(normalized_text(train["title"])))
    export_champion(mlflow_client, registry, cfg.select_metric, settings.paths.classifier_dir)
    return promotion.as_dict()
