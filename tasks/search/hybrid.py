"""One query's hybrid ranking: each signal proposes its best rows, both score every proposal, and the
fused score (`w x text + (1 - w) x CLIP`, tasks/reading/fusion.py) orders them.

CLIP proposes through the index's nearest-row search (exact, or FAISS above a size); read text
through its scores over every cover (a sparse product over the query's n-grams). Proposals from
either side get the other side's exact score, so a cover found only by its printed title still
carries its CLIP similarity, and the ranking equals the fused ranking of the whole collection
whenever the true fused top k lies within both signals' top `candidates` rows.
"""

from __future__ import annotations

import numpy as np

from tasks.reading.fusion import fused
from tasks.search.vectors import NearestRows

Ranked = tuple[int, float, float, float, str]  # row, fused score, CLIP score, text score, why it was found


def best_rows(scores: np.ndarray, count: int) -> np.ndarray:
    """The `count` highest-scoring rows, best first (ties by row)."""
    count = min(count, len(scores))
    if count <= 0:
        return np.zeros(0, np.int64)
    best = np.argpartition(-scores, count - 1)[:count]
    return best[np.lexsort((best, -scores[best]))]


def why_found(in_text_top: bool, in_clip_top: bool) -> str:
    if in_text_top and in_clip_top:
        return "read text + CLIP"
    if in_text_top:
        return "read text"
    return "CLIP" if in_clip_top else "fused"


def fused_candidates(
    vectors: NearestRows, vector: np.ndarray, text: np.ndarray | None, weight: float, k: int, candidates: int
) -> list[Ranked]:
    """The k best rows by fused score. Without read text (or at weight 0), CLIP's own ranking."""
    wanted = max(k, candidates)
    clip_rows, clip_scores = vectors.top(vector, wanted if text is not None and weight > 0 else k)
    if text is None or weight <= 0:
        return [
            (int(r), float(s), float(s), 0.0 if text is None else float(text[r]), "CLIP")
            for r, s in zip(clip_rows[:k], clip_scores[:k])
        ]
    text_rows = best_rows(text, wanted)
    rows = np.union1d(clip_rows, text_rows)  # sorted: memory-mapped vectors are read in file order
    clip = np.asarray(vectors.matrix[rows]) @ np.asarray(vector, np.float32)
    scores = fused(clip, text[rows], weight)
    order = np.lexsort((rows, -scores))[:k]
    text_top, clip_top = set(text_rows[:k][text[text_rows[:k]] > 0].tolist()), set(clip_rows[:k].tolist())
    return [
        (
            int(rows[i]),
            float(scores[i]),
            float(clip[i]),
            float(text[rows[i]]),
            why_found(int(rows[i]) in text_top, int(rows[i]) in clip_top),
        )
        for i in order
    ]
