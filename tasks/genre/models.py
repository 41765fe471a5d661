"""The genre candidates, their calibration, and the model object the registry serves.

Kept free of Prefect and MLflow imports: MLflow copies this package next to each logged model
and unpickles `GenreModel` wherever the model is loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectKBest, chi2
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from tasks.genre.features import FeatureBlocks, TextBatch, as_batch, stack

Params = dict[str, float | int]


@dataclass(frozen=True)
class CandidateSpec:
    """A candidate: which feature blocks it reads, how to build it, and its search grid (default first)."""

    name: str
    blocks: tuple[str, ...]
    build: Callable[[Params, object], ClassifierMixin]
    grid: tuple[Params, ...]
    about: str = ""
    parallel_folds: bool = True  # False for a torch candidate: two trainings at once slow each other 10-20x


def _naive_bayes(params: Params, settings: object) -> ClassifierMixin:
    return ComplementNB(alpha=params["alpha"])


def _logistic_regression(params: Params, settings: object) -> ClassifierMixin:
    # saga, not lbfgs: on 100k sparse columns x 30 classes lbfgs keeps ~600 MiB of curvature
    # history per fit and takes 6x longer, for the same accuracy. 50 epochs are a deliberate
    # budget (tolerance is rarely reached on TF-IDF), so its convergence warning is silenced.
    return QuietSaga(C=params["C"], class_weight="balanced", tol=1e-3, max_iter=50, solver="saga")


def _linear_svm(params: Params, settings: object) -> ClassifierMixin:
    return LinearSVC(C=params["C"], class_weight="balanced", tol=1e-3, random_state=settings.seed)


class QuietSaga(LogisticRegression):
    """Logistic regression whose epoch budget is a choice, not a failure: no ConvergenceWarning."""

    def fit(self, X: object, y: object, sample_weight: object = None) -> QuietSaga:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return super().fit(X, y, sample_weight)


class TopChi2(SelectKBest):
    """chi2's k best columns, or all of them when there are fewer than k (no warning, no error)."""

    def __init__(self, k: int = 1000) -> None:
        super().__init__(chi2, k=k)

    def fit(self, X: object, y: object = None) -> TopChi2:
        self.k = min(self.k, X.shape[1])
        return super().fit(X, y)


def _random_forest(params: Params, settings: object) -> ClassifierMixin:
    # Trees on 100k sparse columns are what made the paper's RF slow; chi2 keeps the informative few.
    forest = RandomForestClassifier(n_estimators=settings.random_forest_trees, max_samples=params["max_samples"],
                                    min_samples_leaf=1, class_weight="balanced_subsample",
                                    n_jobs=1, random_state=settings.seed)  # folds already run in parallel
    return Pipeline([("select", TopChi2(k=int(params["features"]))), ("forest", forest)])


def _minilm_linear(params: Params, settings: object) -> ClassifierMixin:
    return LogisticRegression(C=params["C"], class_weight="balanced", tol=1e-3, max_iter=300)


def _minilm_finetuned(params: Params, settings: object) -> ClassifierMixin:
    from tasks.genre.finetune import FineTunedMiniLM

    tune = settings.finetune
    return FineTunedMiniLM(settings.sentence_encoder, tune.budget_seconds, tune.max_epochs, params["learning_rate"],
                           tune.batch_size, tune.label_smoothing, tune.validation_fraction, tune.frozen_layers,
                           tune.max_tokens, tune.device, settings.seed)


def candidate_specs(settings: object) -> dict[str, CandidateSpec]:
    features = settings.random_forest_features
    return {spec.name: spec for spec in (
        CandidateSpec("naive_bayes", ("title_words", "author"), _naive_bayes,
                      ({"alpha": 0.3}, {"alpha": 0.1}, {"alpha": 1.0}), "Complement NB on word TF-IDF (the paper's model)"),
        CandidateSpec("logistic_regression", ("title_words", "author"), _logistic_regression,
                      ({"C": 10.0}, {"C": 3.0}, {"C": 30.0}), "class-balanced logistic regression on word TF-IDF"),
        CandidateSpec("random_forest", ("title_words", "author"), _random_forest,
                      ({"features": features, "max_samples": 0.3}, {"features": features * 2, "max_samples": 0.3}),
                      "balanced random forest on chi2-selected words"),
        CandidateSpec("linear_svm", ("title_words", "title_chars", "author"), _linear_svm,
                      ({"C": 0.1}, {"C": 0.05}, {"C": 0.3}), "class-balanced linear SVM on word + character n-gram TF-IDF"),
        CandidateSpec("minilm_linear", ("title_embedding",), _minilm_linear,
                      ({"C": 3.0}, {"C": 10.0}, {"C": 1.0}), "class-balanced logistic head on MiniLM title embeddings"),
        CandidateSpec("minilm_finetuned", ("title_author_text",), _minilm_finetuned,
                      ({"learning_rate": settings.finetune.learning_rate},),
                      "MiniLM fine-tuned end to end on title + author (class-balanced, label-smoothed loss)",
                      parallel_folds=False),
    )}


def raw_scores(estimator: ClassifierMixin, features: object) -> np.ndarray:
    """Per-class scores before calibration: log-probabilities, or the margin for an SVM.

    Probabilities are floored at 1e-4: a forest's exact zeros would otherwise become -inf-like
    scores that no temperature can calibrate.
    """
    if hasattr(estimator, "predict_proba"):
        return np.log(np.clip(estimator.predict_proba(features), 1e-4, None))
    return _both_sides(estimator.decision_function(features))


def _both_sides(scores: np.ndarray) -> np.ndarray:
    """A binary margin as two class scores, like the multi-class case."""
    return np.column_stack([-scores, scores]) if scores.ndim == 1 else scores


def block_scores(estimator: ClassifierMixin, blocks: list[object]) -> np.ndarray:
    """raw_scores of the blocks side by side. A linear margin model (the SVM) scores block by block
    instead: X @ W.T summed over the blocks' column ranges, which skips building the stacked matrix."""
    linear_margin = hasattr(estimator, "coef_") and not hasattr(estimator, "predict_proba")
    if len(blocks) == 1 or not linear_margin or not all(sp.issparse(block) for block in blocks):
        return raw_scores(estimator, stack(blocks))
    coefficients = np.asarray(estimator.coef_)
    scores = np.zeros((blocks[0].shape[0], coefficients.shape[0]))
    start = 0
    for block in blocks:
        width = block.shape[1]
        scores += block @ np.ascontiguousarray(coefficients[:, start:start + width].T, dtype=np.float32)
        start += width
    if start != coefficients.shape[1]:
        raise ValueError(f"the blocks have {start} columns, the estimator was fitted on {coefficients.shape[1]}")
    scores += estimator.intercept_
    return _both_sides(scores.ravel()) if coefficients.shape[0] == 1 else scores


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The one temperature that minimises log-loss on out-of-fold scores (Guo et al., 2017).

    A scalar keeps the argmax, so calibrating never changes a prediction, only its probability.
    """
    rows = np.arange(len(labels))

    def log_loss(log_temperature: float) -> float:
        return float(-log_softmax(scores / np.exp(log_temperature), axis=1)[rows, labels].mean())

    return float(np.exp(minimize_scalar(log_loss, bounds=(-5.0, 5.0), method="bounded").x))


def calibrated_log_proba(scores: np.ndarray, temperature: float) -> np.ndarray:
    return log_softmax(scores / temperature, axis=1)


class _CalibratedClassifier:
    """predict / predict_proba from a subclass's calibrated `log_proba`, over a title/author frame."""

    classes_: np.ndarray

    def log_proba(self, frame: pd.DataFrame | TextBatch) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.exp(self.log_proba(frame))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.classes_[np.argmax(self.log_proba(frame), axis=1)]


class GenreModel(_CalibratedClassifier):
    """Fitted feature blocks + a fitted estimator + its temperature: DataFrame(title, author) -> probabilities."""

    def __init__(self, name: str, features: FeatureBlocks, estimator: ClassifierMixin, classes: Sequence[str], temperature: float) -> None:
        self.name = name
        self.features = features
        self.estimator = estimator
        self.classes_ = np.asarray(classes)
        self.temperature = temperature

    def log_proba(self, frame: pd.DataFrame | TextBatch) -> np.ndarray:
        return calibrated_log_proba(block_scores(self.estimator, self.features.transform_blocks(frame)), self.temperature)


class EnsembleModel(_CalibratedClassifier):
    """A weighted mean of two calibrated members' log-probabilities, recalibrated by one temperature."""

    def __init__(self, members: tuple[GenreModel, GenreModel], weight: float, temperature: float) -> None:
        if list(members[0].classes_) != list(members[1].classes_):
            raise ValueError("ensemble members must share their classes")
        self.name = f"ensemble({members[0].name}+{members[1].name})"
        self.members = members
        self.weight = weight
        self.classes_ = members[0].classes_
        self.temperature = temperature

    def log_proba(self, frame: pd.DataFrame | TextBatch) -> np.ndarray:
        batch = as_batch(frame)  # the members share one word split and any block they both read
        first, second = (member.log_proba(batch) for member in self.members)
        return calibrated_log_proba(self.weight * first + (1 - self.weight) * second, self.temperature)


class PriorShiftedModel(_CalibratedClassifier):
    """A calibrated model with tau * log(training prior) taken off its log-probabilities (see
    selection.shift_toward_balance): probabilities as if every genre were equally common."""

    def __init__(self, model: GenreModel | EnsembleModel, log_prior: np.ndarray, shift: float) -> None:
        self.name = model.name
        self.model = model
        self.classes_ = model.classes_
        self.adjustment = shift * np.asarray(log_prior, dtype=np.float64)
        self.shift = shift

    def log_proba(self, frame: pd.DataFrame | TextBatch) -> np.ndarray:
        return log_softmax(self.model.log_proba(frame) - self.adjustment, axis=1)
