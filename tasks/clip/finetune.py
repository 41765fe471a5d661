"""The fine-tune stage: split the labeled covers by book, train CLIP (tasks/clip/loop.py) on one
device or, through torchrun, on N (tasks/clip/launcher.py), log and register the best epoch.

The whole training state is checkpointed (tasks/clip/checkpoints.py), so a killed run continues
where it stopped when the stage is rerun with the same params and data. The epoch with the
lowest validation loss is saved, logged to MLflow and registered; whether it becomes `champion`
is the evaluation stage's call, on the test split.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import asdict
from pathlib import Path

import mlflow
import pandas as pd
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.clip import checkpoints, data, distributed, loop, loss, model, sampling
from tasks.clip.checkpoints import Checkpointer
from tasks.clip.data import PairSet, in_training_fraction, split_frame, test_books_digest, with_splits
from tasks.clip.distributed import DistContext, barrier, init_distributed
from tasks.clip.launcher import TrainingResult, check_devices, launch_dir, launch_torchrun
from tasks.clip.loop import EpochRecord, mean_loss, train
from tasks.clip.model import SMALL, ClipBundle, clip_image_size, initial_bundle, save_bundle
from tasks.clip.pyfunc import CoverClipModel
from tasks.clip.shards import MANIFEST, ROWS, CoverShards
from tasks.platform.errors import DataQualityError, require_inputs
from tasks.platform.outputs import write_json
from tasks.platform.registry import DATA_TAG_PREFIX, register_version, version_description
from tasks.platform.settings import Settings
from tasks.platform.tracking import (
    client,
    content_fingerprint,
    ensure_tracking_reachable,
    file_md5,
    lineage_tags,
    tasks_package_dir,
    tracked_run,
)

log = logging.getLogger(__name__)

CLIP_PIP_REQUIREMENTS = ["torch", "transformers", "safetensors", "pillow", "numpy", "pandas", "mlflow", "efficientnet-lite-pytorch"]
def pair_set(books: pd.DataFrame, shards: CoverShards, bundle: ClipBundle) -> PairSet:
    """Pairs over the shard's pixels, or over its precomputed features when the model's image tower is locked."""
    images = shards.images
    if getattr(bundle.model, "image_tower_locked", False):
        images = shards.tower_features(bundle.model.towers_config.image_tower)
    return PairSet(images, books["caption"].tolist(), books["shard_row"].to_numpy(), books["genre"].astype(str).to_numpy())


# Knobs that change how fast training runs, never what it learns: a checkpoint resumes across them
# (e.g. a run started on 1 GPU continues on 4, or with gradient caching to fit memory). shard_workers is gone
# (the engine section decodes covers now) but stays here so checkpoints written with it still resume.
THROUGHPUT_KNOBS = {"checkpoint_every_steps", "num_threads", "shard_workers", "loader_workers", "accumulation_steps",
                    "gradient_checkpointing", "compile", "devices", "torchrun_args"}


def _log_run(settings: Settings, run_id: str, history: list[EpochRecord], best_epoch: int, inputs_fingerprint: str) -> str:
    """Log the fine-tuned folder as a pyfunc model and register it (or find it registered); return the version."""
    mlflow_client = client()
    for key, value in settings.clip.model_dump(mode="json").items():
        logged = json.dumps(value) if isinstance(value, (dict, list)) else value
        if key in THROUGHPUT_KNOBS:  # a resumed run may differ in these (its params are fixed): tags, last attempt's value
            mlflow_client.set_tag(run_id, f"clip.{key}", logged)
        else:
            mlflow_client.log_param(run_id, key, logged)
    mlflow_client.log_metric(run_id, "best_val_loss", history[best_epoch - 1].val_loss)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=CoverClipModel(), artifacts={"clip": str(settings.paths.clip_dir)},
            code_paths=[str(tasks_package_dir())], pip_requirements=CLIP_PIP_REQUIREMENTS,
        )
    covers_md5, source = file_md5(settings.paths.labeled_covers), settings.data.source_label()
    labeled = pd.read_parquet(settings.paths.labeled_covers, columns=["book_id"])
    tags = {f"{DATA_TAG_PREFIX}source": source, f"{DATA_TAG_PREFIX}labeled_covers_md5": covers_md5,
            f"{DATA_TAG_PREFIX}test_books": test_books_digest(labeled, settings.clip.val_fraction, settings.clip.test_fraction)}
    description = version_description(
        f"CLIP fine-tuned from {settings.clip.model} on (cover, caption) pairs",
        data=f"{source}: labeled covers md5 {covers_md5}, caption template {settings.labeling.caption_template!r}",
        metrics=f"best epoch {best_epoch} of {settings.clip.epochs}, validation loss {history[best_epoch - 1].val_loss:.4f} "
                f"(epoch 1: {history[0].val_loss:.4f}); test recall is in the evaluate run",
        params=settings.clip.model_dump(mode="json"))
    fingerprint = content_fingerprint({"inputs": inputs_fingerprint}, sorted(settings.paths.clip_dir.glob("*")))
    return register_version(mlflow_client, settings.mlflow.clip_model_name, info.model_uri, description, fingerprint, tags)


def training_fingerprint(settings: Settings) -> str:
    """What a checkpoint must share with this run to be resumed: params, labeled covers, shards and training code."""
    code = [Path(module.__file__) for module in (data, model, loss, loop, sampling, checkpoints, distributed, sys.modules[__name__])]
    shards = [settings.paths.cover_shards / name for name in (ROWS, MANIFEST)]
    return content_fingerprint({"clip": settings.clip.model_dump(mode="json", exclude=THROUGHPUT_KNOBS)},
                               [settings.paths.labeled_covers, *shards, *code])


def write_history(settings: Settings, history: list[EpochRecord]) -> Path:
    settings.paths.plots_dir.mkdir(parents=True, exist_ok=True)
    path = settings.paths.plots_dir / "clip_loss.csv"
    pd.DataFrame([asdict(record) for record in history]).to_csv(path, index=False)
    return path


def training_splits(settings: Settings, shards: CoverShards) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and validation books (covers that decoded), refusing splits too small to train, validate or test."""
    cfg = settings.clip
    books = with_splits(shards.usable(), cfg.val_fraction, cfg.test_fraction)
    train_books, val_books = split_frame(books, "train"), split_frame(books, "val")
    if cfg.train_fraction < 1.0:  # the learning curve: fewer training books, the same validation and test books
        train_books = train_books[[in_training_fraction(b, cfg.train_fraction) for b in train_books["book_id"]]]
        log.info("clip.train_fraction %.2f: %d training books", cfg.train_fraction, len(train_books))
    test_books, needed_for_recall = split_frame(books, "test"), max(settings.evaluate.recall_k)
    if len(train_books) < 2 or len(val_books) < 2 or len(test_books) <= needed_for_recall:
        raise DataQualityError(
            f"{settings.paths.cover_shards}: {len(train_books)} train, {len(val_books)} validation, {len(test_books)} test books; "
            f"CLIP needs 2+ to train and validate and more than {needed_for_recall} (max evaluate.recall_k) to test. "
            "Add covers or change clip.val_fraction / clip.test_fraction")
    if len(train_books) < cfg.batch_size:
        log.warning("%d training pairs, fewer than clip.batch_size %d: each epoch is one batch of them all",
                    len(train_books), cfg.batch_size)
    return train_books, val_books


def starting_bundle(settings: Settings, captions: list[str], context: DistContext) -> ClipBundle:
    """The model every rank starts from; rank 0 trains the small tokenizer and the others load its copy."""
    cfg = settings.clip
    if cfg.model != SMALL or not context.distributed:
        return initial_bundle(cfg, captions, None, context.device)
    tokenizer_dir = launch_dir(settings) / "tokenizer"
    bundle = initial_bundle(cfg, captions, None, context.device) if context.is_main else None
    if bundle is not None:
        bundle.tokenizer.save_pretrained(tokenizer_dir)
    barrier(context)
    return bundle or initial_bundle(cfg, None, tokenizer_dir, context.device)


def run_training(settings: Settings, run_id: str, context: DistContext) -> TrainingResult:
    """Everything one training process does, whether it is the only one or one of torchrun's."""
    cfg, paths = settings.clip, settings.paths
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    shards = CoverShards.open(paths.cover_shards, clip_image_size(cfg))
    train_books, val_books = training_splits(settings, shards)
    bundle = starting_bundle(settings, train_books["caption"].tolist(), context)
    train_pairs, val_pairs = pair_set(train_books, shards, bundle), pair_set(val_books, shards, bundle)
    if context.is_main:
        log.info("fine-tuning CLIP (%s) on %d x %s: %d train, %d val pairs", cfg.model, context.world_size, context.device,
                 len(train_pairs), len(val_pairs))
    initial_val_loss = mean_loss(bundle, val_pairs, cfg.batch_size, None, cfg.devices * cfg.accumulation_steps) if context.is_main else math.nan
    checkpointer = Checkpointer(paths.clip_checkpoints, training_fingerprint(settings), cfg.checkpoint_every_steps)
    previous = checkpointer.peek()
    mlflow_client = client()

    def log_epoch(record: EpochRecord) -> None:
        for key in ("train_loss", "val_loss", "pairs_per_second"):
            mlflow_client.log_metric(run_id, key, getattr(record, key), step=record.epoch)

    history, best_epoch = train(bundle, train_pairs, val_pairs, cfg, checkpointer, log_epoch, run_id, context)
    if context.is_main:
        save_bundle(bundle, paths.clip_dir)
    return TrainingResult([asdict(record) for record in history], best_epoch, initial_val_loss, len(train_pairs),
                          len(val_pairs), str(context.device), context.world_size, previous.global_step if previous else 0)


@task(name="fine-tune-clip", cache_policy=NO_CACHE)
def fine_tune(settings: Settings) -> dict[str, object]:
    cfg, paths = settings.clip, settings.paths
    require_inputs("finetune_clip", paths.labeled_covers, paths.cover_shards)
    ensure_tracking_reachable()
    training_splits(settings, CoverShards.open(paths.cover_shards, clip_image_size(cfg)))  # refuse before launching anything
    fingerprint = training_fingerprint(settings)
    previous = Checkpointer(paths.clip_checkpoints, fingerprint).peek()
    tags = lineage_tags({"labeled_covers": paths.labeled_covers, "cover_shards": paths.cover_shards / ROWS},
                        settings.data.source_label())
    with tracked_run(settings.mlflow.experiment, "fine-tune-clip", tags, resume_run_id=previous and previous.mlflow_run_id) as run_id:
        if cfg.devices > 1:
            check_devices(cfg)
            result = launch_torchrun(settings, run_id)
        else:
            result = run_training(settings, run_id, init_distributed(cfg.device))
        history = [EpochRecord(**record) for record in result.history]
        client().log_artifact(run_id, str(write_history(settings, history)))
        version = _log_run(settings, run_id, history, result.best_epoch, fingerprint)
    metrics = {
        "model": cfg.model, "device": result.device, "processes": result.world_size, "train_pairs": result.train_pairs,
        "val_pairs": result.val_pairs, "best_epoch": result.best_epoch, "best_val_loss": history[result.best_epoch - 1].val_loss,
        "initial_val_loss": result.initial_val_loss, "history": result.history,
        "registered_version": version, "mlflow_run_id": run_id, "resumed_from_step": result.resumed_from_step,
    }
    write_json(paths.metrics_dir / "clip_train.json", metrics)
    return metrics
