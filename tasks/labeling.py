"""Label each cover with the genre the champion classifier predicts from its title and author.

Covers are labeled once per book: the same book shelved under several categories (same ISBN),
or sold in several editions (same title and author, other ISBNs), is one image and one caption.
That keeps twins out of CLIP's contrastive batches, where they would be false negatives, and
out of opposite sides of the train/test split, where they would inflate recall.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import mlflow
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.errors import ModelLoadError, require_inputs
from tasks.readers import normalized_text
from tasks.settings import Settings
from tasks.tracking import champion_version, client, log_stage_run

log = logging.getLogger(__name__)


def covers_by_book(covers: pd.DataFrame) -> pd.DataFrame:
    """One row per book (normalised title + author): its first ISBN and image, all its categories joined by '|'."""
    covers = covers.assign(work=normalized_text(covers["title"]) + "\x1f" + normalized_text(covers["author"]))
    categories = covers.groupby("work", sort=False)["category"].agg(lambda c: "|".join(sorted(set(c) - {""})))
    first = covers.drop_duplicates("work", keep="first").set_index("work")
    books = first[["book_id", "title", "author", "image_path"]].join(categories.rename("categories")).reset_index(drop=True)
    books["category"] = books["categories"].str.split("|").str[0].fillna("")
    return books


def make_captions(books: pd.DataFrame, template: str) -> pd.Series:
    return pd.Series(
        [template.format(title=t, author=a if isinstance(a, str) and a else "unknown author", genre=g, category=c)
         for t, a, g, c in zip(books["title"], books["author"], books["genre"], books["category"])],
        index=books.index,
    )


def label_books(covers: pd.DataFrame, model: mlflow.pyfunc.PyFuncModel, template: str) -> pd.DataFrame:
    books = covers_by_book(covers)
    predicted = model.predict(books[["title", "author"]])
    books["genre"] = predicted["genre"].to_numpy()
    books["genre_probability"] = predicted["probability"].astype(float).to_numpy()
    books["caption"] = make_captions(books, template)
    return books


@task(name="label-covers", cache_policy=NO_CACHE)
def label_covers(settings: Settings) -> dict[str, object]:
    cfg, registry = settings.labeling, settings.mlflow
    require_inputs("label_covers", settings.paths.clean_covers)
    model_uri = f"models:/{registry.classifier_model_name}@{registry.champion_alias}"
    client()  # points mlflow at the project's tracking/registry URI
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (mlflow.exceptions.MlflowException, OSError) as error:
        raise ModelLoadError(f"{model_uri} cannot be loaded ({error}); run the train_classifier stage first") from error
    covers = pd.read_parquet(settings.paths.clean_covers)
    books = label_books(covers, model, cfg.caption_template)
    settings.paths.labeled_covers.parent.mkdir(parents=True, exist_ok=True)
    books.to_parquet(settings.paths.labeled_covers, index=False)
    metrics = {
        "books": len(books),
        "cover_rows": len(covers),
        "model_uri": model_uri,
        "model_version": champion_version(client(), registry.classifier_model_name, registry.champion_alias),
        "mean_probability": float(books["genre_probability"].mean()) if len(books) else 0.0,
        "genre_distribution": dict(Counter(books["genre"]).most_common()),
    }
    settings.paths.metrics_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = settings.paths.metrics_dir / "labeling.json"
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    metrics["mlflow_run_id"] = log_stage_run(
        registry.experiment, "label-covers", {"clean_covers": settings.paths.clean_covers, "labeled_covers": settings.paths.labeled_covers},
        {"books": len(books), "mean_probability": metrics["mean_probability"]}, [metrics_file],
    )
    log.info("labeled %d books from %d cover rows with %s", len(books), len(covers), model_uri)
    return metrics
