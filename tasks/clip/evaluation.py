"""Evaluate base vs fine-tuned CLIP on the test books, and move `champion` only on improvement.

Retrieval is scored as open_clip does (image_to_text_R@k, text_to_image_R@k, each cover's own
caption the only match); zero-shot genre accuracy prompts the covers' own Book Depository
categories; a small table shows how a few title prompts score against a cover, before and after.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.clip.data import load_images, split_frame, with_splits
from tasks.clip.gallery import retrieval_gallery
from tasks.clip.hybrid import BookSignals, book_signals, chosen_weights, hybrid_report
from tasks.clip.model import SMALL, ClipBundle, embed_images, embed_texts, initial_bundle, load_saved_clip, pick_device
from tasks.clip.shards import CoverShards, labeled_shards
from tasks.clip.towers import TOWERS, embed_tower_features
from tasks.genre.labeling import accepted_genres, load_category_mapping, load_local_classifier, make_captions
from tasks.inputs.taxonomy import readable_category
from tasks.platform.errors import DataQualityError, ModelLoadError, require_inputs
from tasks.platform.outputs import write_json
from tasks.platform.registry import DATA_TAG_PREFIX, Promotion, champion_version, data_tags, keep_as_challenger, promote_if_better
from tasks.platform.settings import ClipSettings, EvaluateSettings, Settings
from tasks.platform.tracking import client, ensure_tracking_reachable, lineage_tags, tracked_run
from tasks.reading.fusion import fused
from tasks.reading.stage import with_read_text

log = logging.getLogger(__name__)


def text_to_image_ranks(similarity: np.ndarray) -> np.ndarray:
    """For each text (column), how many other covers score at least as high as its own (ties count against the
    model; a NaN score, from a diverged model, finds nothing). On the transpose: each cover's rank among the texts."""
    similarity = np.nan_to_num(similarity, nan=-np.inf)
    diagonal = similarity[np.arange(len(similarity)), np.arange(len(similarity))]
    return (similarity >= diagonal[None, :]).sum(axis=0) - 1


def recall_at_k(similarity: np.ndarray, ks: list[int]) -> dict[str, float]:
    """Recall@k both ways for a square image x text similarity whose diagonal holds the true pairs."""
    if len(similarity) == 0:
        return {}
    image_rank, text_rank = text_to_image_ranks(similarity.T), text_to_image_ranks(similarity)
    metrics = {}
    for k in ks:
        metrics[f"image_to_text_R@{k}"] = float((image_rank < k).mean())
        metrics[f"text_to_image_R@{k}"] = float((text_rank < k).mean())
    metrics["mean_recall"] = float(np.mean(list(metrics.values())))
    return metrics


def recall_by_genre(similarity: np.ndarray, genres: list[str], k: int, min_books: int = 5) -> dict[str, float]:
    """text->image R@k of each predicted genre's books (their captions searching the whole gallery), for the
    genres with at least `min_books` test books: the spread says whether some genres are served worse."""
    hits = pd.Series(text_to_image_ranks(similarity) < k).groupby(np.asarray(genres))
    sizes = hits.size()
    return {str(genre): float(value) for genre, value in hits.mean().items() if sizes[genre] >= min_books}


def zero_shot_accuracy(bundle: ClipBundle, image_embeds: np.ndarray, categories: list[str], template: str) -> float:
    """Share of covers whose best-scoring category prompt is one of the categories the book is shelved under."""
    labels = sorted({c for joined in categories for c in joined.split("|") if c})
    if not labels:
        return float("nan")
    prompts = embed_texts(bundle, [template.format(category=readable_category(label)) for label in labels])
    predicted = np.asarray(labels)[(image_embeds @ prompts.T).argmax(axis=1)]
    return float(np.mean([p in joined.split("|") for p, joined in zip(predicted, categories)]))


def score_model(bundle: ClipBundle, covers: TestCovers, books: pd.DataFrame, cfg: EvaluateSettings) -> tuple[dict[str, float], np.ndarray]:
    image_embeds = covers.embeddings(bundle, cfg.batch_size)
    text_embeds = embed_texts(bundle, books["caption"].tolist(), cfg.batch_size)
    similarity = image_embeds @ text_embeds.T
    metrics = recall_at_k(similarity, cfg.recall_k)
    metrics["zero_shot_category_accuracy"] = zero_shot_accuracy(bundle, image_embeds, books["categories"].tolist(), cfg.zero_shot_template)
    by_genre = recall_by_genre(similarity, books["genre"].astype(str).tolist(), max(cfg.recall_k))
    if by_genre:  # across genres: the balanced sampler is meant to lower it
        metrics[f"genre_text_to_image_R@{max(cfg.recall_k)}_std"] = float(np.std(list(by_genre.values())))
    return metrics, image_embeds


def query_recall(bundle: ClipBundle, image_embeds: np.ndarray, books: pd.DataFrame, cfg: EvaluateSettings) -> dict[str, dict[str, float]]:
    """Recall@k both ways with each of evaluate.query_templates as the texts (e.g. a title alone, a title + genre)."""
    return {name: recall_at_k(image_embeds @ embed_texts(bundle, make_captions(books, template).tolist(), cfg.batch_size).T,
                              cfg.recall_k)
            for name, template in cfg.query_templates.items()}


def title_similarity_table(bundles: dict[str, ClipBundle], embeds: dict[str, np.ndarray], books: pd.DataFrame, count: int) -> pd.DataFrame:
    """The paper's table: for a few covers, the cosine similarity of matching and other title prompts."""
    rows = []
    count = min(count, len(books))
    for i in range(count):
        prompts = [(books["caption"][i], True), (books["title"][i], True)]
        prompts += [(books["caption"][(i + shift) % len(books)], False) for shift in (1, 2) if len(books) > shift]
        for prompt, match in prompts:
            row = {"cover": books["title"][i], "prompt": prompt, "matches_cover": match}
            for name, bundle in bundles.items():
                row[name] = float(embed_texts(bundle, [prompt])[0] @ embeds[name][i])
            rows.append(row)
    return pd.DataFrame(rows)


def _champion_bundle(settings: Settings, device: str) -> ClipBundle:
    """The current champion, which exists: failing to load it is an error, never 'no champion'."""
    uri = f"models:/{settings.mlflow.clip_model_name}@{settings.mlflow.champion_alias}"
    try:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tempfile.mkdtemp(prefix="clip-champion-"))
    except (MlflowException, OSError) as error:
        raise ModelLoadError(f"the current champion {uri} cannot be loaded ({error}); restore its artifacts "
                             "or remove the alias before evaluating a challenger") from error
    return load_saved_clip(Path(folder) / "artifacts" / "clip", device)


class TestCovers:
    """The test covers, decoded once per image size: a champion may see at another resolution."""

    def __init__(self, books: pd.DataFrame, shards: CoverShards | None = None) -> None:
        """`shards`: the labeled covers' shard set; its tower features serve when every test cover decoded there."""
        self.paths = books["image_path"].tolist()
        self.by_size: dict[int, np.ndarray] = {}
        rows = books["shard_row"].to_numpy() if shards is not None else None
        self.shards = shards if shards is not None and shards.rows["shard_error"].iloc[rows].isna().all() else None
        self.rows = rows

    def embeddings(self, bundle: ClipBundle, batch_size: int) -> np.ndarray:
        """The covers embedded by `bundle`: from the shards' locked-tower features when they fit it, else from pixels."""
        if self.shards is not None and self.shards.features_fit(bundle.model):
            return embed_tower_features(bundle.model, self.shards.features[self.rows])
        return embed_images(bundle, self.at(bundle.image_size), batch_size)

    def at(self, size: int) -> np.ndarray:
        if size not in self.by_size:
            images, ok = load_images(self.paths, size, desc=f"decode test covers at {size}px")
            if not ok.all():
                raise DataQualityError(f"{(~ok).sum()} test covers no longer decode; rerun the validate stage")
            self.by_size[size] = images
        return self.by_size[size]


def hybrid_evaluation(settings: Settings, bundle: ClipBundle, splits: pd.DataFrame, shards: CoverShards | None,
                      test: pd.DataFrame, test_embeds: np.ndarray) -> tuple[dict[str, object], np.ndarray]:
    """Read text, CLIP and their fusion on the test books, the fusion weights chosen on the validation books; and the
    fused title-query x test-cover scores (the gallery's hybrid rows)."""
    cfg, classifier = settings.evaluate, load_local_classifier(settings.paths.classifier_dir)
    mapping = load_category_mapping(settings.labeling.category_mapping)

    def signals(books: pd.DataFrame, image_embeds: np.ndarray) -> BookSignals:
        captions = embed_texts(bundle, books["caption"].tolist(), cfg.batch_size)
        return book_signals(bundle, classifier, books, image_embeds, captions, settings.labeling.caption_template,
                            cfg.zero_shot_template, accepted_genres(books, mapping).tolist(), settings.hybrid)

    validation = with_read_text(split_frame(splits, "val"), settings.paths.cover_text)
    weights = chosen_weights(signals(validation, TestCovers(validation, shards).embeddings(bundle, cfg.batch_size)),
                             settings.hybrid, cfg.recall_k)
    tested = signals(test, test_embeds)
    report = hybrid_report(tested, weights, settings.hybrid, cfg.recall_k)
    scores = fused(tested.clip["title_to_cover"], tested.text["title_to_cover"], float(weights["title_to_cover"]))
    return {"weights": weights, "chosen_on": f"{len(validation)} validation books", "test_books": len(test), **report}, scores


def hybrid_metrics(hybrid: dict[str, object]) -> dict[str, float]:
    """The hybrid figures as flat MLflow metric names (hybrid_title_to_cover_R_at_10, ...)."""
    flat = {f"{name}_{key.replace('@', '_at_')}": float(value) for name in ("read_text", "hybrid")
            for key, value in dict(hybrid[name]).items()}
    flat.update({f"genre_from_cover_{key}": float(v) for key, v in dict(hybrid["genre_from_cover"]).items()})
    flat.update({f"identification_{key}": float(v) for key, v in dict(hybrid["identification"]).items()})
    return {key: value for key, value in flat.items() if np.isfinite(value)}


def base_description(cfg: ClipSettings) -> str:
    """What 'base' is, in words, beside its figures."""
    if cfg.model == TOWERS:
        return (f"the pretrained towers ({cfg.towers.image_tower}, {cfg.towers.text_tower}) with untrained projection "
                f"heads (randomly initialised, seed {cfg.seed})")
    if cfg.model == SMALL:
        return f"the small CLIP architecture, randomly initialised (seed {cfg.seed})"
    return f"{cfg.model} before fine-tuning"


def chance_levels(test_books: int, ks: list[int]) -> dict[str, float]:
    """Recall@k of a model that ranks at random: k / gallery size."""
    return {f"R@{k}": round(min(1.0, k / max(1, test_books)), 6) for k in ks}


def _write_outputs(settings: Settings, report: dict[str, object], table: pd.DataFrame) -> None:
    paths = settings.paths
    paths.metrics_dir.mkdir(parents=True, exist_ok=True)
    paths.plots_dir.mkdir(parents=True, exist_ok=True)
    write_json(paths.metrics_dir / "clip.json", report)
    recall_rows = [{"metric": metric, "model": model, "value": value}
                   for model in ("base", "finetuned") for metric, value in report[model].items()]
    pd.DataFrame(recall_rows).to_csv(paths.plots_dir / "clip_recall.csv", index=False)
    table.to_csv(paths.plots_dir / "clip_title_similarity.csv", index=False)


def _decide(settings: Settings, mlflow_client: MlflowClient, version: str, tuned_score: float, base_score: float,
            books: pd.DataFrame, covers: TestCovers) -> Promotion:
    """Promote the fine-tuned version only over a champion tested on the same books, or over its own start.

    A champion tested on other books (other covers: another data set) is not compared at all: the
    version is registered, not promoted, and the alias history says why.
    """
    cfg, registry = settings.evaluate, settings.mlflow
    name, alias = registry.clip_model_name, registry.champion_alias
    experiment = os.environ.get("DVC_EXP_NAME")
    if experiment:  # `dvc exp run` (bookcovers experiments): a variant is measured, never made champion
        return keep_as_challenger(mlflow_client, name, alias, version, f"DVC experiment {experiment}: experiments never move "
                                  f"@{alias}; `bookcovers promote clip {version}` does it by hand")
    current = champion_version(mlflow_client, name, alias)
    if current == version:  # re-evaluating the champion itself: keep it
        return promote_if_better(mlflow_client, name, alias, version, tuned_score, None, cfg.select_metric, "the champion itself")
    if current is None:  # without a champion the fine-tuned model must at least beat the model it started from
        return promote_if_better(mlflow_client, name, alias, version, tuned_score, base_score, cfg.select_metric,
                                 f"{len(books)} test books, against the model it started from")
    key = f"{DATA_TAG_PREFIX}test_books"
    theirs, ours = data_tags(mlflow_client, name, current).get(key), data_tags(mlflow_client, name, version).get(key)
    if theirs is None or theirs != ours:
        why = "records no test books" if theirs is None else "was tested on other books (other covers)"
        return keep_as_challenger(mlflow_client, name, alias, version,
                                  f"champion v{current} {why}, so no comparison is known to be fair; "
                                  f"`bookcovers promote clip {version}` switches by hand")
    champion = _champion_bundle(settings, settings.clip.device)
    reference = score_model(champion, covers, books, cfg)[0][cfg.select_metric]
    return promote_if_better(mlflow_client, name, alias, version, tuned_score, reference, cfg.select_metric,
                             f"the same {len(books)} test books as v{current}")


@task(name="evaluate-clip", cache_policy=NO_CACHE)
def evaluate(settings: Settings) -> dict[str, object]:
    cfg, paths, registry = settings.evaluate, settings.paths, settings.mlflow
    require_inputs("evaluate", paths.labeled_covers, paths.clip_dir, paths.metrics_dir / "clip_train.json", paths.cover_text)
    ensure_tracking_reachable()
    labeled = pd.read_parquet(paths.labeled_covers).assign(shard_row=lambda frame: np.arange(len(frame)))
    splits = with_splits(labeled, settings.clip.val_fraction, settings.clip.test_fraction)
    books = split_frame(splits, "test")
    trained = json.loads((paths.metrics_dir / "clip_train.json").read_text(encoding="utf-8"))
    device = pick_device(settings.clip.device)
    finetuned = load_saved_clip(paths.clip_dir, settings.clip.device)
    base = initial_bundle(settings.clip, None, paths.clip_dir, device)
    covers = TestCovers(books, labeled_shards(paths.cover_shards, labeled["image_path"].tolist()))
    base_metrics, base_embeds = score_model(base, covers, books, cfg)
    tuned_metrics, tuned_embeds = score_model(finetuned, covers, books, cfg)
    table = title_similarity_table({"base": base, "finetuned": finetuned}, {"base": base_embeds, "finetuned": tuned_embeds}, books, cfg.sample_covers)
    hybrid, hybrid_scores = hybrid_evaluation(settings, finetuned, splits, covers.shards, with_read_text(books, paths.cover_text),
                                              tuned_embeds)
    gallery = retrieval_gallery(paths.plots_dir / "clip_retrieval_gallery.png", books, {
        "base": (base, base_embeds, covers.at(base.image_size)),
        "fine-tuned": (finetuned, tuned_embeds, covers.at(finetuned.image_size)),
    }, scored={"hybrid (title alone)": (hybrid_scores, covers.at(finetuned.image_size))})
    if cfg.select_metric not in tuned_metrics:
        raise DataQualityError(f"evaluate.select_metric={cfg.select_metric!r} is not one of {sorted(tuned_metrics)}")
    mlflow_client = client()
    promotion = _decide(settings, mlflow_client, trained["registered_version"], tuned_metrics[cfg.select_metric],
                        base_metrics[cfg.select_metric], books, covers)
    queries = {"base": query_recall(base, base_embeds, books, cfg), "finetuned": query_recall(finetuned, tuned_embeds, books, cfg)}
    report = {"test_books": len(books), "select_metric": cfg.select_metric, "base_model": base_description(settings.clip),
              "chance": chance_levels(len(books), cfg.recall_k), "base": base_metrics, "finetuned": tuned_metrics,
              "queries": {name: {model: queries[model][name] for model in queries} for name in cfg.query_templates},
              "hybrid": hybrid, "registry": promotion.as_dict()}
    _write_outputs(settings, report, table)
    tags = lineage_tags({"labeled_covers": paths.labeled_covers}, settings.data.source_label())
    with tracked_run(registry.experiment, "evaluate-clip", tags) as run_id:
        for model_name, metrics in (("base", base_metrics), ("finetuned", tuned_metrics)):
            for key, value in metrics.items():
                mlflow_client.log_metric(run_id, f"{model_name}_{key.replace('@', '_at_')}", value)
            for style, style_metrics in queries[model_name].items():
                for key, value in style_metrics.items():
                    mlflow_client.log_metric(run_id, f"{model_name}_{style}_query_{key.replace('@', '_at_')}", value)
        for key, value in hybrid_metrics(hybrid).items():
            mlflow_client.log_metric(run_id, key, value)
        mlflow_client.log_artifact(run_id, str(paths.metrics_dir / "clip.json"))
        mlflow_client.log_artifact(run_id, str(paths.plots_dir / "clip_title_similarity.csv"))
        mlflow_client.log_artifact(run_id, str(gallery))
        mlflow_client.log_artifact(run_id, str(paths.plots_dir / "clip_recall.csv"))
    report["mlflow_run_id"] = run_id
    log.info("CLIP mean recall: base %.4f -> fine-tuned %.4f", base_metrics["mean_recall"], tuned_metrics["mean_recall"])
    return report
