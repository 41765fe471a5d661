"""Label each cover with the genre the champion classifier predicts from its title and author.

Covers are labeled once per book: the same book shelved under several categories (same ISBN),
or sold in several editions (same title and author, other ISBNs), is one image and one caption.
That keeps twins out of CLIP's contrastive batches, where they would be false negatives, and
out of opposite sides of the train/test split, where they would inflate recall.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.inputs.readers import normalized_text
from tasks.inputs.taxonomy import AMAZON_GENRES
from tasks.platform.errors import InputFileError, ModelLoadError, require_inputs
from tasks.platform.outputs import write_json
from tasks.platform.registry import champion_version
from tasks.platform.settings import Settings
from tasks.platform.tracking import client, ensure_tracking_reachable, log_stage_run

log = logging.getLogger(__name__)


def work_keys(books: pd.DataFrame) -> pd.Series:
    """A book's identity across ISBNs, editions and batches: its normalised title and author."""
    return normalized_text(books["title"]) + "\x1f" + normalized_text(books["author"].fillna(""))


def covers_by_book(covers: pd.DataFrame) -> pd.DataFrame:
    """One row per book (normalised title + author): its first ISBN and image, all its categories joined by '|'."""
    covers = covers.assign(work=work_keys(covers))
    shelves: dict[str, set[str]] = {}  # a dict, not a groupby: one Python aggregation per book costs 20x more
    for work, category in zip(covers["work"].tolist(), covers["category"].fillna("").tolist()):
        shelves.setdefault(work, set()).add(category)
    first = covers.drop_duplicates("work", keep="first")
    books = first[["book_id", "title", "author", "image_path"]].reset_index(drop=True)
    books["categories"] = ["|".join(sorted(shelves[work] - {""})) for work in first["work"]]
    books["category"] = books["categories"].str.split("|").str[0].fillna("")
    return books


def make_captions(books: pd.DataFrame, template: str) -> pd.Series:
    """One caption per book; the template may use {title}, {author}, {genre}, {category}, {probability}."""
    probabilities = books["genre_probability"] if "genre_probability" in books else pd.Series(1.0, index=books.index)
    return pd.Series(
        [template.format(title=t, author=a if isinstance(a, str) and a else "unknown author", genre=g, category=c,
                         probability=p)
         for t, a, g, c, p in zip(books["title"], books["author"], books["genre"], books["category"], probabilities)],
        index=books.index,
    )


def label_books(covers: pd.DataFrame, model: mlflow.pyfunc.PyFuncModel, template: str) -> pd.DataFrame:
    books = covers_by_book(covers)
    predicted = model.predict(books[["title", "author"]])
    books["genre"] = predicted["genre"].to_numpy()
    books["genre_probability"] = predicted["probability"].astype(float).to_numpy()
    books["caption"] = make_captions(books, template)
    return books


def load_category_mapping(path: Path) -> dict[str, frozenset[str]]:
    """Cover category -> the Amazon genres that correspond; every genre must be one of book32's."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise InputFileError(f"{path}: the category mapping cannot be read ({error}); fix it or point "
                             "labeling.category_mapping at another file") from error
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise InputFileError(f"{path}: expected 'Category: [Amazon genre, ...]' lines")
    unknown = sorted({g for genres in raw.values() for g in genres} - set(AMAZON_GENRES))
    if unknown:
        raise InputFileError(f"{path}: {unknown} are not Amazon genres; use the names of tasks/inputs/taxonomy.py")
    return {str(category): frozenset(genres) for category, genres in raw.items()}


def accepted_genres(books: pd.DataFrame, mapping: dict[str, frozenset[str]]) -> pd.Series:
    """Per book, the Amazon genres its own categories map to (empty: none of its categories is mapped)."""
    categories = books["categories"].fillna("").str.split("|")
    return categories.map(lambda cats: frozenset().union(*(mapping.get(c, frozenset()) for c in cats)))


def title_query_caption(template: str, title: str, genre: str, probability: float | None = None, author: str = "") -> str:
    """The caption a typed title is searched with: the captions' own template, the author when given, the genre
    predicted from the title (or chosen). The search and its evaluation build it with this one function."""
    return template.format(title=title, author=author or "unknown author", genre=genre, category="",
                           probability=1.0 if probability is None else probability)


def genre_distribution(model: mlflow.pyfunc.PyFuncModel, frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Every genre's probability for each row (the registered model's own answer keeps only the best genre)."""
    from tasks.genre.pyfunc import classifier_frame

    pipeline = model.unwrap_python_model().pipeline
    return [str(c) for c in pipeline.classes_], np.asarray(pipeline.predict_proba(classifier_frame(frame)), np.float32)


def category_agreement(books: pd.DataFrame, mapping: dict[str, frozenset[str]]) -> dict[str, object]:
    """How often the predicted genre is one the cover's own categories map to, over mapped books.

    A book shelved under several categories agrees when any of them maps to its genre.
    """
    categories = books["categories"].fillna("").str.split("|")
    mapped = accepted_genres(books, mapping)
    has_mapping = mapped.map(bool)
    agrees = pd.Series([genre in genres for genre, genres in zip(books["genre"], mapped)], index=books.index)
    per_category = {}
    for category, group in books.assign(agrees=agrees, first=books["category"])[has_mapping].groupby("first"):
        per_category[str(category)] = {"books": len(group), "agreement": round(float(group["agrees"].mean()), 4),
                                       "top_genre": group["genre"].value_counts().index[0]}
    unmapped = Counter(c for cats in categories for c in cats if c and c not in mapping)
    return {
        "books_with_mapping": int(has_mapping.sum()),
        "books_without_mapping": int((~has_mapping).sum()),
        "agreement": round(float(agrees[has_mapping].mean()), 4) if has_mapping.any() else None,
        "unmapped_categories": dict(unmapped.most_common()),
        "per_category": per_category,
    }


def load_local_classifier(classifier_dir: Path) -> mlflow.pyfunc.PyFuncModel:
    """The champion classifier as the train_classifier stage saved it beside the project (no registry round trip)."""
    try:
        return mlflow.pyfunc.load_model(str(Path(classifier_dir) / "model"))
    except (MlflowException, OSError) as error:
        raise ModelLoadError(f"{classifier_dir}: the champion classifier cannot be loaded ({error}); "
                             "run the train_classifier stage first") from error


def load_champion_classifier(settings: Settings) -> tuple[mlflow.pyfunc.PyFuncModel, str, str | None]:
    """The classifier champion as a pyfunc model, its URI and its registry version."""
    registry = settings.mlflow
    ensure_tracking_reachable()
    model_uri = f"models:/{registry.classifier_model_name}@{registry.champion_alias}"
    client()  # points mlflow at the project's tracking/registry URI
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as error:  # noqa: BLE001  any failure (missing files, unpicklable code) means "cannot load"
        raise ModelLoadError(f"{model_uri} cannot be loaded ({error}); run the train_classifier stage first") from error
    return model, model_uri, champion_version(client(), registry.classifier_model_name, registry.champion_alias)


@task(name="label-covers", cache_policy=NO_CACHE)
def label_covers(settings: Settings) -> dict[str, object]:
    cfg, registry = settings.labeling, settings.mlflow
    require_inputs("label_covers", settings.paths.clean_covers)
    model, model_uri, model_version = load_champion_classifier(settings)
    mapping = load_category_mapping(cfg.category_mapping)
    covers = pd.read_parquet(settings.paths.clean_covers)
    started = time.perf_counter()
    books = label_books(covers, model, cfg.caption_template)
    labeling_seconds = time.perf_counter() - started
    settings.paths.labeled_covers.parent.mkdir(parents=True, exist_ok=True)
    books.to_parquet(settings.paths.labeled_covers, index=False)
    metrics = {
        "books": len(books),
        "cover_rows": len(covers),
        "model_uri": model_uri,
        "model_version": model_version,
        "mean_probability": float(books["genre_probability"].mean()) if len(books) else 0.0,
        "titles_per_second": round(len(books) / max(labeling_seconds, 1e-9), 1),
        "genre_distribution": dict(Counter(books["genre"]).most_common()),
        "category_agreement": category_agreement(books, mapping),
    }
    settings.paths.metrics_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = settings.paths.metrics_dir / "labeling.json"
    write_json(metrics_file, metrics)
    metrics["mlflow_run_id"] = log_stage_run(
        registry.experiment, "label-covers", {"clean_covers": settings.paths.clean_covers, "labeled_covers": settings.paths.labeled_covers},
        {"books": len(books), "mean_probability": metrics["mean_probability"],
         "category_agreement": metrics["category_agreement"]["agreement"] or 0.0}, [metrics_file], settings.data.source_label(),
    )
    log.info("labeled %d books from %d cover rows with %s (%.0f titles/s); predicted genre agrees with the mapped "
             "cover category on %s of %d mapped books", len(books), len(covers), model_uri, metrics["titles_per_second"],
             metrics["category_agreement"]["agreement"], metrics["category_agreement"]["books_with_mapping"])
    return metrics
