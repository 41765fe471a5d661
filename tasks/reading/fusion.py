"""Late fusion of the cover search's two signals, CLIP similarity and read-text match, and the
choice of its weight on validation books.

A fused score is `w x text + (1 - w) x clip` on the raw cosines of each signal. The weight absorbs
the two scales, which is why it is chosen by measurement: on the validation books, every weight
of a grid is scored by the mean of its recall@k, and the best (the smallest on a tie: the more
CLIP-like) is kept. The same functions score the test books, so a figure in metrics/clip.json is
what the search does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def fused(clip: np.ndarray, text: np.ndarray, weight: float) -> np.ndarray:
    return (weight * np.asarray(text, np.float32) + (1.0 - weight) * np.asarray(clip, np.float32)).astype(np.float32)


def diagonal_recall(similarity: np.ndarray, ks: list[int]) -> dict[str, float]:
    """Recall@k of queries (rows) whose true match is the gallery item of the same index; ties count against it."""
    if len(similarity) == 0:
        return {}
    similarity = np.nan_to_num(similarity, nan=-np.inf)
    own = similarity[np.arange(len(similarity)), np.arange(len(similarity))]
    ranks = (similarity > own[:, None]).sum(axis=1) + ((similarity == own[:, None]).sum(axis=1) - 1)
    return {f"R@{k}": float((ranks < k).mean()) for k in ks}


@dataclass(frozen=True)
class WeightChoice:
    weight: float
    score: float  # mean recall@k at that weight, on the books it was chosen on
    by_weight: dict[str, float]  # every weight tried -> its mean recall@k


def choose_weight(clip: np.ndarray, text: np.ndarray, grid: list[float], ks: list[int]) -> WeightChoice:
    """The grid weight whose fused similarity has the best mean recall@k (queries x gallery, truth on the diagonal)."""
    by_weight = {}
    for weight in grid:
        recalls = diagonal_recall(fused(clip, text, weight), ks)
        by_weight[f"{weight:g}"] = float(np.mean(list(recalls.values()))) if recalls else 0.0
    best = max(grid, key=lambda w: (by_weight[f"{w:g}"], -w))
    return WeightChoice(float(best), by_weight[f"{best:g}"], by_weight)


def choose_genre_weight(
    classifier: np.ndarray, zero_shot: np.ndarray, genres: list[str], accepted: list[frozenset[str]], grid: list[float]
) -> WeightChoice:
    """The grid weight whose fused genre probabilities agree most often with each book's accepted genres."""
    by_weight = {f"{w:g}": genre_agreement(fused(zero_shot, classifier, w), genres, accepted) for w in grid}
    best = max(grid, key=lambda w: (by_weight[f"{w:g}"], -w))
    return WeightChoice(float(best), by_weight[f"{best:g}"], by_weight)


def genre_agreement(probabilities: np.ndarray, genres: list[str], accepted: list[frozenset[str]]) -> float:
    """Share of books whose most likely genre is one of their accepted ones (books with none are left out)."""
    keep = [i for i, ok in enumerate(accepted) if ok]
    if not keep:
        return float("nan")
    best = np.asarray(genres)[np.asarray(probabilities)[keep].argmax(axis=1)]
    return float(np.mean([genre in accepted[i] for genre, i in zip(best, keep)]))


def identified(scores: np.ndarray, keys: np.ndarray, min_score: float, margin: float) -> int | None:
    """The row of the one book the scores point to, or None: the best must reach `min_score` and beat the best
    row of any *other* book (another work key: editions of one book do not compete) by `margin`."""
    if not len(scores):
        return None
    best = int(np.argmax(scores))
    if scores[best] < min_score:
        return None
    others = scores[keys != keys[best]]
    runner_up = float(others.max()) if len(others) else 0.0
    return best if scores[best] - runner_up >= margin else None
