"""The hybrid search measured on a set of books: CLIP, read text, and their fusion, both ways, plus
a cover's genre and identity from its read text. The evaluate stage runs it on the validation
books (to choose the fusion weights) and the test books (to report them); index_covers runs it on
the validation books for the CLIP it indexes. The queries are the ones a user types: a title alone
(searched by CLIP with the caption built from its predicted genre, and by its characters against
the covers' read text) and a cover alone (its CLIP embedding against the captions, its read text
against the titles and authors).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
import torch

from tasks.clip.model import ClipBundle, embed_texts
from tasks.genre.labeling import genre_distribution, title_query_caption, work_keys
from tasks.platform.sections import HybridSettings
from tasks.reading.fusion import choose_genre_weight, choose_weight, diagonal_recall, fused, genre_agreement, identified
from tasks.reading.text_match import TextMatcher

DIRECTIONS = ("title_to_cover", "cover_to_title")


def title_and_author(books: pd.DataFrame) -> list[str]:
    """What a cover's read text is matched against: the book's title and author, as they are printed."""
    return (books["title"].fillna("").astype(str) + " " + books["author"].fillna("").astype(str)).tolist()


@dataclass
class BookSignals:
    """Each signal's queries x gallery similarity on one set of books (truth on the diagonal), and the genre inputs."""

    clip: dict[str, np.ndarray]
    text: dict[str, np.ndarray]
    genres: list[str]
    classifier_on_text: np.ndarray  # books x genres: the classifier champion on each cover's read text
    zero_shot: np.ndarray  # books x genres: CLIP zero-shot, a prompt per genre
    accepted: list[frozenset[str]]  # the genres each book's own categories map to
    work_keys: np.ndarray


def zero_shot_probabilities(bundle: ClipBundle, image_embeds: np.ndarray, genres: list[str], template: str) -> np.ndarray:
    prompts = embed_texts(bundle, [template.format(category=genre) for genre in genres])
    logits = torch.from_numpy(np.ascontiguousarray(image_embeds @ prompts.T)) * bundle.model.logit_scale.exp().item()
    return torch.softmax(logits, dim=1).numpy()


def book_signals(
    bundle: ClipBundle,
    classifier: mlflow.pyfunc.PyFuncModel,
    books: pd.DataFrame,
    image_embeds: np.ndarray,
    caption_embeds: np.ndarray,
    caption_template: str,
    zero_shot_template: str,
    accepted: list[frozenset[str]],
    hybrid: HybridSettings | None = None,
) -> BookSignals:
    """`books` needs title, author, read_text; `image_embeds`/`caption_embeds` are its covers' and captions' rows."""
    common = {} if hybrid is None else {"common_share": hybrid.common_ngram_share, "common_min": hybrid.common_ngram_min}
    titles = books["title"].fillna("").astype(str).tolist()
    read_text = books["read_text"].fillna("").astype(str).tolist()
    predicted = classifier.predict(pd.DataFrame({"title": titles, "author": [""] * len(titles)}))
    queries = [
        title_query_caption(caption_template, t, str(g), float(p))
        for t, g, p in zip(titles, predicted["genre"], predicted["probability"])
    ]
    genres, on_text = genre_distribution(classifier, pd.DataFrame({"title": read_text, "author": [""] * len(titles)}))
    return BookSignals(
        clip={"title_to_cover": embed_texts(bundle, queries) @ image_embeds.T, "cover_to_title": image_embeds @ caption_embeds.T},
        text={
            "title_to_cover": TextMatcher.from_texts(read_text, **common).similarity(titles),
            "cover_to_title": TextMatcher.from_texts(title_and_author(books), **common).similarity(read_text),
        },
        genres=genres,
        classifier_on_text=on_text,
        zero_shot=zero_shot_probabilities(bundle, image_embeds, genres, zero_shot_template),
        accepted=accepted,
        work_keys=work_keys(books).to_numpy(),
    )


def chosen_weights(signals: BookSignals, cfg: HybridSettings, ks: list[int]) -> dict[str, object]:
    """The fusion weights: each one set in params as it is, each null one chosen on these books."""
    fixed = {"title_to_cover": cfg.title_text_weight, "cover_to_title": cfg.cover_text_weight}
    weights: dict[str, object] = {}
    for direction in DIRECTIONS:
        choice = choose_weight(signals.clip[direction], signals.text[direction], cfg.weight_grid, ks)
        weights[direction] = fixed[direction] if fixed[direction] is not None else choice.weight
        weights[f"{direction}_by_weight"] = choice.by_weight
    genre = choose_genre_weight(signals.classifier_on_text, signals.zero_shot, signals.genres, signals.accepted, cfg.weight_grid)
    weights["genre"] = cfg.genre_text_weight if cfg.genre_text_weight is not None else genre.weight
    weights["genre_by_weight"] = genre.by_weight
    return weights


def hybrid_report(signals: BookSignals, weights: dict[str, object], cfg: HybridSettings, ks: list[int]) -> dict[str, object]:
    """Recall@k both ways for read text alone, CLIP alone and their fusion; genre agreement; identification."""
    rows: dict[str, dict[str, float]] = {"read_text": {}, "clip": {}, "hybrid": {}}
    for direction in DIRECTIONS:
        clip, text, weight = signals.clip[direction], signals.text[direction], float(weights[direction])
        for name, similarity in (("read_text", text), ("clip", clip), ("hybrid", fused(clip, text, weight))):
            rows[name].update({f"{direction}_{key}": value for key, value in diagonal_recall(similarity, ks).items()})
    genre_weight = float(weights["genre"])
    genre = {
        "classifier_on_read_text": genre_agreement(signals.classifier_on_text, signals.genres, signals.accepted),
        "zero_shot": genre_agreement(signals.zero_shot, signals.genres, signals.accepted),
        "fused": genre_agreement(
            fused(signals.zero_shot, signals.classifier_on_text, genre_weight), signals.genres, signals.accepted
        ),
        "books_with_mapped_category": int(sum(bool(a) for a in signals.accepted)),
    }
    return {**rows, "genre_from_cover": genre, "identification": identification_report(signals, cfg)}


def identification_report(signals: BookSignals, cfg: HybridSettings) -> dict[str, float]:
    """How often a cover's read text names one book (coverage), and how often that book is its own (precision)."""
    text = signals.text["cover_to_title"]
    answers = [identified(text[i], signals.work_keys, cfg.identify_min_score, cfg.identify_margin) for i in range(len(text))]
    named = [(i, row) for i, row in enumerate(answers) if row is not None]
    correct = sum(signals.work_keys[row] == signals.work_keys[i] for i, row in named)
    return {
        "coverage": round(len(named) / max(1, len(answers)), 4),
        "precision": round(correct / len(named), 4) if named else float("nan"),
        "books": len(answers),
    }
