"""Train the title + author -> genre candidates, pick one by cross-validation, guard the champion.

The candidates are the book-cover paper's (Naive Bayes, Logistic Regression, Logistic Regression
with a cross-validated grid, Random Forest) plus a calibrated linear SVM. Selection uses CV on the
training split only; the held-out test split is assigned by a hash of the book id, so it stays the
same book set when the listing grows and a challenger and the champion are scored on equal terms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.base import ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.feature_selection import SelectKBest, chi2
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold, cross_validate
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC
from tqdm import tqdm

import tasks
from tasks.errors import DataQualityError, ModelLoadError, require_inputs
from tasks.readers import normalized_text
from tasks.serving import GenreClassifierModel, classifier_frame
from tasks.settings import ClassifierSettings, Settings
from tasks.tracking import champion_version, client, file_md5, lineage_tags, promote_if_better, register_version, tracked_run

log = logging.getLogger(__name__)

MODEL_PIP_REQUIREMENTS = ["scikit-learn", "pandas", "numpy", "mlflow"]


def author_tokens(author: str) -> list[str]:
    """The author's name parts and whole name as features, plus one token every row has.

    The constant token keeps the vocabulary non-empty when a listing has no authors at all
    (the 'Category,Title' table), where a plain vectorizer would refuse to fit.
    """
    parts = [part for part in re.findall(r"\w+", author.lower()) if len(part) > 1]
    return ["<any>", *(f"part:{part}" for part in parts), *([f"name:{' '.join(parts)}"] if parts else [])]


def text_features() -> ColumnTransformer:
    """Word uni+bigrams of the title and the author's name, TF-IDF weighted."""
    return ColumnTransformer([
        ("title", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, strip_accents="unicode", min_df=2), "title"),
        ("author", TfidfVectorizer(analyzer=author_tokens, min_df=2), "author"),
    ])


def _pipeline(model: ClassifierMixin, *between: tuple[str, object]) -> Pipeline:
    return Pipeline([("features", text_features()), *between, ("model", model)])


def build_candidate(name: str, settings: ClassifierSettings) -> Pipeline | GridSearchCV:
    seed = settings.seed
    if name == "naive_bayes":
        return _pipeline(MultinomialNB(alpha=0.1))
    if name == "logistic_regression":
        return _pipeline(LogisticRegression(C=4.0, tol=1e-3, max_iter=1000))
    if name == "logistic_regression_cv":
        return GridSearchCV(
            _pipeline(LogisticRegression(tol=1e-3, max_iter=1000)),
            {"model__C": [1.0, 4.0, 16.0]},
            cv=StratifiedKFold(3, shuffle=True, random_state=seed),
            scoring=settings.select_metric,
        )
    if name == "random_forest":
        return _pipeline(
            RandomForestClassifier(n_estimators=settings.random_forest_trees, n_jobs=-1, random_state=seed),
            ("select", SelectKBest(chi2, k=settings.random_forest_features)),
        )
    if name == "linear_svm":
        return _pipeline(CalibratedClassifierCV(LinearSVC(C=0.5), cv=3))
    raise ValueError(f"unknown classifier candidate {name!r}; choose from naive_bayes, logistic_regression, "
                     "logistic_regression_cv, random_forest, linear_svm")


def is_test_book(title_key: str, test_fraction: float) -> bool:
    """Stable membership of the held-out split: a hash of the normalised title, not a random draw.

    Hashing the title rather than the id keeps every edition and re-listing of a title on one side.
    """
    bucket = int(hashlib.md5(str(title_key).encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < test_fraction


def split_listing(listing: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    in_test = normalized_text(listing["title"]).map(lambda key: is_test_book(key, test_fraction))
    return listing[~in_test].reset_index(drop=True), listing[in_test].reset_index(drop=True)


def scores(y_true: pd.Series, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


@dataclass
class CandidateResult:
    name: str
    cv: dict[str, float]
    test: dict[str, float]
    fit_seconds: float
    model: Pipeline | GridSearchCV

    def summary(self) -> dict[str, object]:
        return {"cv": self.cv, "test": self.test, "fit_seconds": round(self.fit_seconds, 3)}


def evaluate_candidate(name: str, train: pd.DataFrame, test: pd.DataFrame, settings: ClassifierSettings) -> CandidateResult:
    """k-fold CV on the training split, then a refit on all of it, scored once on the test split."""
    started = time.perf_counter()
    folds = StratifiedGroupKFold(settings.cv_folds, shuffle=True, random_state=settings.seed)
    try:
        cv = cross_validate(build_candidate(name, settings), classifier_frame(train), train["genre"],
                            groups=normalized_text(train["title"]), cv=folds, scoring=["accuracy", "f1_macro"],
                            n_jobs=settings.n_jobs, error_score="raise")
    except ValueError as error:
        raise DataQualityError(f"classifier candidate {name} could not be cross-validated: {error}") from error
    model = build_candidate(name, settings).fit(classifier_frame(train), train["genre"])
    cv_scores = {
        f"{metric}_{stat}": float(getattr(cv[f"test_{metric}"], stat)())
        for metric in ("accuracy", "f1_macro") for stat in ("mean", "std")
    }
    test_scores = scores(test["genre"], model.predict(classifier_frame(test)))
    return CandidateResult(name, cv_scores, test_scores, time.perf_counter() - started, model)


def hyperparameters(model: Pipeline | GridSearchCV) -> dict[str, object]:
    """The final estimator's scalar settings (C, alpha, n_estimators, ...), for the candidate's MLflow run."""
    estimator = model.best_estimator_ if isinstance(model, GridSearchCV) else model
    params = estimator.named_steps["model"].get_params(deep=False)
    return {f"model.{key}": value for key, value in params.items() if isinstance(value, (int, float, str, bool))}


def _log_candidate(mlflow_client: MlflowClient, result: CandidateResult, parent_run_id: str, experiment: str, tags: dict[str, str]) -> None:
    with tracked_run(experiment, f"candidate-{result.name}", tags, parent_run_id=parent_run_id) as run_id:
        mlflow_client.log_param(run_id, "candidate", result.name)
        for key, value in hyperparameters(result.model).items():
            mlflow_client.log_param(run_id, key, value)
        if isinstance(result.model, GridSearchCV):
            for key, value in result.model.best_params_.items():
                mlflow_client.log_param(run_id, f"best_{key}", value)
        for key, value in result.cv.items():
            mlflow_client.log_metric(run_id, f"cv_{key}", value)
        for key, value in result.test.items():
            mlflow_client.log_metric(run_id, f"test_{key}", value)
        mlflow_client.log_metric(run_id, "fit_seconds", result.fit_seconds)


def champion_score_on(test: pd.DataFrame, model_uri: str, metric: str, exists: bool) -> float | None:
    """Score the current champion on this run's test split, or None when there is none.

    A champion that exists but cannot be loaded is an error, never 'no champion': that would
    let any challenger take the alias.
    """
    if not exists:
        return None
    try:
        champion = mlflow.pyfunc.load_model(model_uri)
    except (mlflow.exceptions.MlflowException, OSError) as error:
        raise ModelLoadError(f"the current champion {model_uri} cannot be loaded ({error}); "
                             "restore its artifacts or remove the alias before training a challenger") from error
    predicted = champion.predict(test[["title", "author"]])["genre"].to_numpy()
    return scores(test["genre"], predicted)[metric]


def _write_plots(settings: Settings, results: list[CandidateResult], winner: CandidateResult, test: pd.DataFrame) -> None:
    plots = settings.paths.plots_dir
    plots.mkdir(parents=True, exist_ok=True)
    rows = [{"candidate": r.name, "metric": f"cv_{m}", "score": r.cv[f"{m}_mean"]} for r in results for m in ("accuracy", "f1_macro")]
    pd.DataFrame(rows).to_csv(plots / "classifier_cv.csv", index=False)
    predicted = winner.model.predict(classifier_frame(test))
    pd.DataFrame({"actual": test["genre"], "predicted": predicted}).to_csv(plots / "classifier_confusion.csv", index=False)


def _export_champion(model_uri: str, target: Path, record: dict[str, object]) -> None:
    """A local copy of the champion, so DVC versions what the labeling stage will use."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target / "model"))
    (target / "champion.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


@task(name="train-and-select-classifier", cache_policy=NO_CACHE)
def train_and_select(settings: Settings) -> dict[str, object]:
    cfg, registry = settings.classifier, settings.mlflow
    require_inputs("train_classifier", settings.paths.clean_listing)
    listing = pd.read_parquet(settings.paths.clean_listing)
    train, test = split_listing(listing, cfg.test_fraction)
    if train["genre"].nunique() < 2 or test.empty:
        raise DataQualityError(f"{settings.paths.clean_listing}: need at least two genres and a non-empty test split "
                         f"(have {train['genre'].nunique()} genres, {len(test)} test rows)")
    log.info("classifier: %d train rows, %d test rows, %d genres", len(train), len(test), train["genre"].nunique())
    mlflow_client = client()
    tags = lineage_tags({"clean_listing": settings.paths.clean_listing})
    with tracked_run(registry.experiment, "train-classifier", tags) as parent_run_id:
        results = []
        for name in tqdm(cfg.candidates, desc="classifier candidates", unit="model"):
            result = evaluate_candidate(name, train, test, cfg)
            log.info("%s: cv %s, test %s, %.1fs", name, result.cv, result.test, result.fit_seconds)
            _log_candidate(mlflow_client, result, parent_run_id, registry.experiment, tags)
            results.append(result)
        winner = max(results, key=lambda r: np.nan_to_num(r.cv[f"{cfg.select_metric}_mean"], nan=-np.inf))
        outcome = _register_winner(settings, mlflow_client, parent_run_id, winner, test)
        metrics = {
            "train_rows": len(train), "test_rows": len(test), "genres": int(train["genre"].nunique()),
            "select_metric": cfg.select_metric, "selected": winner.name,
            "candidates": {r.name: r.summary() for r in results},
            "test": winner.test, "registry": outcome, "mlflow_run_id": parent_run_id,
        }
        _write_plots(settings, results, winner, test)
        mlflow_client.log_dict(parent_run_id, metrics, "classifier_metrics.json")
        for key, value in winner.test.items():
            mlflow_client.log_metric(parent_run_id, f"test_{key}", value)
    settings.paths.metrics_dir.mkdir(parents=True, exist_ok=True)
    (settings.paths.metrics_dir / "classifier.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def _register_winner(settings: Settings, mlflow_client: MlflowClient, run_id: str, winner: CandidateResult, test: pd.DataFrame) -> dict[str, object]:
    cfg, registry = settings.classifier, settings.mlflow
    champion_uri = f"models:/{registry.classifier_model_name}@{registry.champion_alias}"
    existing = champion_version(mlflow_client, registry.classifier_model_name, registry.champion_alias)
    champion_score = champion_score_on(test, champion_uri, cfg.select_metric, existing is not None)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=GenreClassifierModel(winner.model),
            code_paths=[str(Path(tasks.__file__).parent)], pip_requirements=MODEL_PIP_REQUIREMENTS,
            input_example=test[["title", "author"]].head(3),
        )
    description = (f"{winner.name}; CV {cfg.select_metric} {winner.cv[cfg.select_metric + '_mean']:.4f}; "
                   f"test {winner.test}; clean listing md5 {file_md5(settings.paths.clean_listing)}")
    version = register_version(mlflow_client, registry.classifier_model_name, info.model_uri, description)
    promotion = promote_if_better(
        mlflow_client, registry.classifier_model_name, registry.champion_alias, version,
        winner.test[cfg.select_metric], champion_score, cfg.select_metric,
    )
    # Only what identifies the champion: a challenger that lost must not change this DVC output.
    champion_record = {"name": registry.classifier_model_name, "alias": registry.champion_alias,
                       "version": promotion.champion_version,
                       f"{cfg.select_metric}_on_test": promotion.challenger_score if promotion.promoted else champion_score}
    _export_champion(champion_uri, settings.paths.classifier_dir, champion_record)
    return promotion.as_dict()
