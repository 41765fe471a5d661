"""Cross-validated, time-budgeted search over the genre candidates, with calibration and an ensemble.

Every candidate is scored at its default hyper-parameters; the remaining grid points are tried,
cheapest candidate first, only while the search budget lasts. Each point keeps its out-of-fold
scores, so the temperature of the winner and the weights of the ensemble are fitted on
predictions no model saw during its own training.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed
from scipy.special import log_softmax
from sklearn.base import clone
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from tqdm import tqdm

from tasks.genre.features import stack_blocks
from tasks.genre.models import CandidateSpec, Params, calibrated_log_proba, fit_temperature, raw_scores

log = logging.getLogger(__name__)

LABEL_METRICS = ("accuracy", "balanced_accuracy", "f1_macro")
ENSEMBLE_WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7)
PRIOR_SHIFTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def label_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def probability_scores(y_true: np.ndarray, log_proba: np.ndarray, bins: int = 15) -> dict[str, float]:
    """Log-loss and the expected calibration error of the top class (15 equal-width bins)."""
    confidence = np.exp(log_proba.max(axis=1))
    correct = log_proba.argmax(axis=1) == y_true
    edges = np.minimum((confidence * bins).astype(int), bins - 1)
    gap = sum(abs(correct[edges == b].mean() - confidence[edges == b].mean()) * np.mean(edges == b)
              for b in range(bins) if np.any(edges == b))
    return {"log_loss": float(-log_proba[np.arange(len(y_true)), y_true].mean()), "ece": float(gap)}


def cv_figures(fold_scores: list[dict[str, float]]) -> dict[str, float]:
    """Mean and spread over the folds of every label metric: `accuracy_mean`, `accuracy_std`, ..."""
    return {f"{m}_{stat}": float(getattr(np, stat)([fold[m] for fold in fold_scores]))
            for m in LABEL_METRICS for stat in ("mean", "std")}


@dataclass
class CvData:
    """The rows CV runs on: their block matrices, integer labels, and the fold assignment."""

    blocks: dict[str, object]
    labels: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    n_classes: int

    def features(self, names: tuple[str, ...]) -> object:
        return stack_blocks(self.blocks, names)


@dataclass
class SearchPoint:
    params: Params
    fold_scores: list[dict[str, float]]
    oof_scores: np.ndarray
    seconds: float

    def mean(self, metric: str) -> float:
        return float(np.mean([fold[metric] for fold in self.fold_scores]))

    def std(self, metric: str) -> float:
        return float(np.std([fold[metric] for fold in self.fold_scores]))


@dataclass
class CandidateResult:
    name: str
    about: str
    points: list[SearchPoint] = field(default_factory=list)
    temperature: float = 1.0
    members: tuple[str, ...] = ()
    ensemble_weight: float | None = None
    oof_log_proba: np.ndarray | None = None
    final_fit_seconds: float = 0.0
    prior_shift: float = 0.0
    shifted_fold_scores: list[dict[str, float]] | None = None

    def best(self, metric: str) -> SearchPoint:
        return max(self.points, key=lambda p: np.nan_to_num(p.mean(metric), nan=-np.inf))

    def score(self, metric: str) -> float:
        """The CV score it competes with: its best point's mean (after the prior shift, where one was
        chosen), NaN counting as the worst."""
        if self.shifted_fold_scores:
            return float(np.mean([fold[metric] for fold in self.shifted_fold_scores]))
        return float(np.nan_to_num(self.best(metric).mean(metric), nan=-np.inf))

    def summary(self, metric: str, labels: np.ndarray) -> dict[str, object]:
        best = self.best(metric)
        calibrated = probability_scores(labels, self.oof_log_proba)
        raw = probability_scores(labels, log_softmax(best.oof_scores, axis=1))
        cv = cv_figures(best.fold_scores)
        return {
            "about": self.about,
            "params": best.params,
            "cv": cv_figures(self.shifted_fold_scores) if self.prior_shift else cv,
            **({"prior_shift": self.prior_shift, "cv_before_prior_shift": cv} if self.prior_shift else {}),
            "calibration": {"temperature": self.temperature, "log_loss_before": raw["log_loss"],
                            "log_loss": calibrated["log_loss"], "ece_before": raw["ece"], "ece": calibrated["ece"]},
            "search": [{"params": p.params, metric: p.mean(metric), "seconds": round(p.seconds, 2)} for p in self.points],
            "search_seconds": round(sum(p.seconds for p in self.points), 2),
            "final_fit_seconds": round(self.final_fit_seconds, 2),
            **({"members": list(self.members), "weight": self.ensemble_weight} if self.members else {}),
        }


def _oof_scores(spec: CandidateSpec, params: Params, settings: object, data: CvData) -> np.ndarray:
    features = data.features(spec.blocks)
    # Threads, not processes: liblinear, BLAS and the forests release the GIL, and threads share
    # the feature matrices instead of copying them into every worker (which cost ~1 GiB at 207k rows).
    per_fold = Parallel(n_jobs=settings.n_jobs if spec.parallel_folds else 1, prefer="threads")(
        delayed(_held_out_scores)(spec, params, settings, features, data.labels, train, held_out, data.n_classes)
        for train, held_out in data.folds)
    oof = np.zeros((len(data.labels), data.n_classes), dtype=np.float64)
    for (_, held_out), scores in zip(data.folds, per_fold):
        oof[held_out] = scores
    return oof


def _held_out_scores(spec: CandidateSpec, params: Params, settings: object, features: object, labels: np.ndarray,
                     train: np.ndarray, held_out: np.ndarray, n_classes: int) -> np.ndarray:
    """Fit on one fold's training rows, score its held-out rows; only the scores travel back.

    Returning the fitted models instead would hold every fold's forest in memory at once.
    """
    model = clone(spec.build(params, settings)).fit(features[train], labels[train])
    scores = raw_scores(model, features[held_out])
    aligned = np.full((len(held_out), n_classes), scores.min() - 10.0)  # a class the fold never saw
    aligned[:, model.classes_] = scores
    return aligned


def evaluate_point(spec: CandidateSpec, params: Params, settings: object, data: CvData) -> SearchPoint:
    started = time.perf_counter()
    oof = _oof_scores(spec, params, settings, data)
    fold_scores = [label_scores(data.labels[held_out], oof[held_out].argmax(axis=1)) for _, held_out in data.folds]
    return SearchPoint(params, fold_scores, oof, time.perf_counter() - started)


def search(specs: list[CandidateSpec], settings: object, data: CvData) -> list[CandidateResult]:
    """Defaults for every candidate, then the rest of the grids, best candidate first, while
    `search_budget_seconds` lasts (a point is skipped when its default took longer than what is left)."""
    metric = settings.select_metric
    results = {spec.name: CandidateResult(spec.name, spec.about) for spec in specs}
    for spec in tqdm(specs, desc="classifier candidates", unit="model"):
        point = evaluate_point(spec, spec.grid[0], settings, data)
        results[spec.name].points.append(point)
        log.info("%s %s: CV %s %.4f (%.1fs)", spec.name, point.params, metric, point.mean(metric), point.seconds)
    budget_left = settings.search_budget_seconds
    # The best candidates' grids first: that is where a better setting can change the winner.
    ranked = sorted(specs, key=lambda s: -results[s.name].score(metric))
    pending = [(results[s.name].points[0].seconds, s, params) for s in ranked for params in s.grid[1:]]
    for estimated, spec, params in pending:
        if estimated > budget_left:
            log.info("search budget: %.0fs left, skipping %s %s (about %.0fs)", budget_left, spec.name, params, estimated)
            continue
        point = evaluate_point(spec, params, settings, data)
        budget_left -= point.seconds
        results[spec.name].points.append(point)
        log.info("%s %s: CV %s %.4f (%.1fs)", spec.name, params, metric, point.mean(metric), point.seconds)
    for result in results.values():
        best = result.best(metric)
        result.temperature = fit_temperature(best.oof_scores, data.labels)
        result.oof_log_proba = calibrated_log_proba(best.oof_scores, result.temperature)
    return list(results.values())


def choose_winner(results: list[CandidateResult], ensemble: CandidateResult | None,
                  metric: str) -> tuple[CandidateResult, list[CandidateResult], CandidateResult | None]:
    """(winner, the candidates that competed, the ensemble when it was left out for not helping)."""
    best_single = max(results, key=lambda r: r.score(metric))
    if ensemble is not None and ensemble.score(metric) > best_single.score(metric):
        return ensemble, [*results, ensemble], None
    return best_single, list(results), ensemble


def ensemble_of_best_two(results: list[CandidateResult], settings: object, data: CvData) -> CandidateResult | None:
    """The weighted mean of the two best candidates' calibrated log-probabilities (weight chosen by CV).

    The caller keeps it only when it beats the best single candidate.
    """
    metric = settings.select_metric
    ranked = sorted(results, key=lambda r: r.score(metric), reverse=True)
    if len(ranked) < 2:
        return None
    first, second = ranked[:2]
    started = time.perf_counter()
    points = []
    for weight in ENSEMBLE_WEIGHTS:
        combined = weight * first.oof_log_proba + (1 - weight) * second.oof_log_proba
        fold_scores = [label_scores(data.labels[held], combined[held].argmax(axis=1)) for _, held in data.folds]
        points.append(SearchPoint({"weight": weight}, fold_scores, combined, 0.0))
    result = CandidateResult("ensemble", f"weighted log-probability mean of {first.name} and {second.name}",
                             points, members=(first.name, second.name))
    best = result.best(metric)
    best.seconds = time.perf_counter() - started
    result.ensemble_weight = float(best.params["weight"])
    result.temperature = fit_temperature(best.oof_scores, data.labels)
    result.oof_log_proba = calibrated_log_proba(best.oof_scores, result.temperature)
    return result


def shift_toward_balance(result: CandidateResult, log_prior: np.ndarray, data: CvData, metric: str) -> None:
    """Subtract tau * log(training prior) from the winner's calibrated log-probabilities, tau chosen by CV.

    The listing's genres are skewed (a few genres have 10x the rows of others), so even class-weighted
    models lean to the big genres. Balanced accuracy and macro-F1 reward p(title | genre), not
    p(genre | title): dividing out the prior is the logit adjustment of Menon et al. (2021). tau = 0
    (no shift) stays when no shift beats it on the out-of-fold predictions.
    """
    def folds_of(tau: float) -> list[dict[str, float]]:
        shifted = result.oof_log_proba - tau * log_prior
        return [label_scores(data.labels[held], shifted[held].argmax(axis=1)) for _, held in data.folds]

    scored = {tau: folds_of(tau) for tau in PRIOR_SHIFTS}
    best = max(PRIOR_SHIFTS, key=lambda tau: (np.mean([fold[metric] for fold in scored[tau]]), -tau))
    if best:
        result.prior_shift, result.shifted_fold_scores = best, scored[best]
        result.oof_log_proba = log_softmax(result.oof_log_proba - best * log_prior, axis=1)
        log.info("prior shift %.2f: CV %s %.4f -> %.4f", best, metric, np.mean([f[metric] for f in scored[0.0]]),
                 np.mean([f[metric] for f in scored[best]]))
