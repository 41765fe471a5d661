"""The picture people look at first: for a few test titles, the top covers each model finds.

One row per (title, model), base above fine-tuned above the hybrid search (CLIP + the covers' read
text, queried with the title alone), the title's own cover framed in green when it is among the
results: the art-search seed's before/after, for books.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tasks.clip.model import ClipBundle, embed_texts  # noqa: E402


def top_covers(bundle: ClipBundle, query: str, image_embeds: np.ndarray, k: int) -> np.ndarray:
    scores = image_embeds @ embed_texts(bundle, [query])[0]
    return np.argsort(-scores)[:k]


def retrieval_gallery(path: Path, books: pd.DataFrame, models: dict[str, tuple[ClipBundle, np.ndarray, np.ndarray]],
                      queries: int = 4, k: int = 5, scored: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> Path:
    """models: name -> (bundle, its test-cover embeddings, the covers as it sees them, uint8 NHWC), each queried with the
    book's caption; scored: name -> (title queries x test covers scores, the covers), e.g. the hybrid search's."""
    queries, k = min(queries, len(books)), min(k, len(books))
    rankers = {name: (lambda q, b=bundle, e=embeds: top_covers(b, str(books["caption"].iloc[q]), e, k), covers)
               for name, (bundle, embeds, covers) in models.items()}
    rankers.update({name: (lambda q, s=scores: np.argsort(-s[q], kind="stable")[:k], covers)
                    for name, (scores, covers) in (scored or {}).items()})
    figure, axes = plt.subplots(queries * len(rankers), k, figsize=(1.6 * k + 3.0, 2.1 * queries * len(rankers)), squeeze=False)
    for q in range(queries):
        query = str(books["caption"].iloc[q])
        for m, (name, (ranker, covers)) in enumerate(rankers.items()):
            row = q * len(rankers) + m
            found = ranker(q)
            for column, index in enumerate(found):
                axis = axes[row][column]
                axis.imshow(covers[index])
                axis.set_xticks([])
                axis.set_yticks([])
                hit = index == q
                for spine in axis.spines.values():
                    spine.set_edgecolor("#2a2" if hit else "#ccc")
                    spine.set_linewidth(4 if hit else 1)
            label = textwrap.shorten(query, 84, placeholder="…")
            label = "\n".join(textwrap.wrap(label, 28))
            axes[row][0].set_ylabel(f"{name}\n{label}" if m == 0 else name, rotation=0, ha="right", va="center", fontsize=7)
    figure.suptitle(f"Top-{k} covers per title, {' vs '.join(rankers)} (green: the title's own cover)", fontsize=9)
    figure.tight_layout(rect=(0.12, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
