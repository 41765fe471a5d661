"""Fine-tune CLIP on (cover, caption) pairs with the symmetric contrastive loss.

AdamW with warmup + cosine decay; bf16 autocast on CUDA, fp32 on CPU. The whole training
state is checkpointed (tasks/checkpoints.py) after every epoch and, optionally, every few
steps, so a killed run continues where it stopped when the stage is rerun with the same
params and data. The epoch with the lowest validation loss is the one saved as the
fine-tuned model, logged to MLflow and registered. Whether it becomes `champion` is the
evaluation stage's call, on the test split.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

import tasks
from tasks import checkpoints, clip_data, clip_model
from tasks.checkpoints import Checkpointer, TrainState
from tasks.clip_data import load_images, split_frame, with_splits
from tasks.clip_model import ClipBundle, image_features, initial_bundle, pick_device, save_bundle, text_features
from tasks.errors import DataQualityError, require_inputs
from tasks.serving import CoverClipModel
from tasks.settings import ClipSettings, Settings
from tasks.tracking import (
    client,
    content_fingerprint,
    ensure_tracking_reachable,
    file_md5,
    lineage_tags,
    register_version,
    tracked_run,
    version_description,
)

log = logging.getLogger(__name__)

CLIP_PIP_REQUIREMENTS = ["torch", "transformers", "safetensors", "pillow", "numpy", "pandas", "mlflow"]
MAX_LOGIT_SCALE = math.log(100.0)


def contrastive_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy: each cover must pick its caption and each caption its cover."""
    image_embeds = F.normalize(image_embeds.float(), dim=-1)
    text_embeds = F.normalize(text_embeds.float(), dim=-1)
    logits = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * image_embeds @ text_embeds.T
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    seconds: float
    pairs_per_second: float


@dataclass
class PairSet:
    images: np.ndarray
    captions: list[str]

    def __len__(self) -> int:
        return len(self.captions)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batch_loss(bundle: ClipBundle, pairs: PairSet, index: np.ndarray) -> torch.Tensor:
    with autocast(bundle.device):
        images = image_features(bundle, pairs.images[index])
        texts = text_features(bundle, [pairs.captions[i] for i in index])
    return contrastive_loss(images, texts, bundle.model.logit_scale)


def batches(size: int, batch_size: int, generator: np.random.Generator | None) -> list[np.ndarray]:
    """Shuffled full batches when training (a short last batch has too few negatives), in order otherwise."""
    order = generator.permutation(size) if generator is not None else np.arange(size)
    if generator is not None and size >= batch_size:
        return [order[i:i + batch_size] for i in range(0, size - batch_size + 1, batch_size)]
    return [order[i:i + batch_size] for i in range(0, size, batch_size) if len(order[i:i + batch_size]) > 1]


@torch.no_grad()
def mean_loss(bundle: ClipBundle, pairs: PairSet, batch_size: int) -> float:
    bundle.model.eval()
    losses = [(batch_loss(bundle, pairs, index).item(), len(index)) for index in batches(len(pairs), batch_size, None)]
    return sum(loss * n for loss, n in losses) / max(1, sum(n for _, n in losses))


def schedule(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def train(bundle: ClipBundle, train_pairs: PairSet, val_pairs: PairSet, cfg: ClipSettings, checkpointer: Checkpointer,
          on_epoch: Callable[[EpochRecord], None] = lambda record: None, mlflow_run_id: str | None = None,
          ) -> tuple[list[EpochRecord], int]:
    """Train to cfg.epochs, resuming from the checkpoint when one of this run exists; reload the best epoch.

    The batch order of each epoch comes from a generator whose state at the epoch's start is
    checkpointed, so a run resumed mid-epoch sees exactly the batches it would have seen.
    """
    optimizer = torch.optim.AdamW(bundle.model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  fused=bundle.device.type == "cuda")
    steps_per_epoch = len(batches(len(train_pairs), cfg.batch_size, np.random.default_rng(0)))
    total = max(1, steps_per_epoch * cfg.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(int(cfg.warmup_fraction * total), total))
    generator = np.random.default_rng(cfg.seed)
    state = checkpointer.resume(bundle.model, optimizer, scheduler) or TrainState(checkpointer.fingerprint, mlflow_run_id=mlflow_run_id)
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if state.epoch_rng is None:
            state.epoch_rng = generator.bit_generator.state
        generator.bit_generator.state = state.epoch_rng
        epoch_batches = batches(len(train_pairs), cfg.batch_size, generator)
        started = time.perf_counter()
        bundle.model.train()
        done_before = state.step_in_epoch
        for index in tqdm(epoch_batches[done_before:], desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False,
                          initial=done_before, total=len(epoch_batches)):
            loss = batch_loss(bundle, train_pairs, index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            state.epoch_losses.append(loss.item())
            state.step_in_epoch += 1
            state.global_step += 1
            if checkpointer.every_steps and state.global_step % checkpointer.every_steps == 0 and state.step_in_epoch < len(epoch_batches):
                checkpointer.save(bundle.model, optimizer, scheduler, state)
        seconds = time.perf_counter() - started
        record = EpochRecord(epoch, float(np.mean(state.epoch_losses)) if state.epoch_losses else math.nan,
                             mean_loss(bundle, val_pairs, cfg.batch_size), seconds,
                             (state.step_in_epoch - done_before) * cfg.batch_size / max(seconds, 1e-9))
        log.info("epoch %d: train %.4f, val %.4f, %.0f pairs/s", epoch, record.train_loss, record.val_loss, record.pairs_per_second)
        on_epoch(record)  # before the checkpoint: a kill in between repeats a log line rather than losing one
        if record.val_loss < state.best_loss:
            checkpointer.save_best(bundle.model, epoch)
            state.best_epoch, state.best_loss = epoch, record.val_loss
        state.history.append(asdict(record))
        state.epoch, state.step_in_epoch, state.epoch_losses = epoch, 0, []
        state.epoch_rng = generator.bit_generator.state
        checkpointer.save(bundle.model, optimizer, scheduler, state)
    history = [EpochRecord(**record) for record in state.history]
    if state.best_epoch == 0:
        raise DataQualityError(f"CLIP training diverged: no epoch had a finite validation loss "
                               f"({[r.val_loss for r in history]}); lower clip.learning_rate")
    checkpointer.load_best(bundle.model, state.best_epoch)
    return history, state.best_epoch


def pair_set(books: pd.DataFrame, image_size: int) -> PairSet:
    images, ok = load_images(books["image_path"].tolist(), image_size)
    captions = [caption for caption, keep in zip(books["caption"], ok) if keep]
    return PairSet(images, captions)


def _log_run(settings: Settings, run_id: str, history: list[EpochRecord], best_epoch: int, inputs_fingerprint: str) -> str:
    """Log the fine-tuned folder as a pyfunc model and register it (or find it registered); return the version."""
    mlflow_client = client()
    for key, value in settings.clip.model_dump(mode="json").items():
        mlflow_client.log_param(run_id, key, json.dumps(value) if isinstance(value, dict) else value)
    mlflow_client.log_metric(run_id, "best_val_loss", history[best_epoch - 1].val_loss)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=CoverClipModel(), artifacts={"clip": str(settings.paths.clip_dir)},
            code_paths=[str(Path(tasks.__file__).parent)], pip_requirements=CLIP_PIP_REQUIREMENTS,
        )
    description = version_description(
        f"CLIP fine-tuned from {settings.clip.model} on (cover, caption) pairs",
        data=f"labeled covers md5 {file_md5(settings.paths.labeled_covers)}, caption template {settings.labeling.caption_template!r}",
        metrics=f"best epoch {best_epoch} of {settings.clip.epochs}, validation loss {history[best_epoch - 1].val_loss:.4f} "
                f"(epoch 1: {history[0].val_loss:.4f}); test recall is in the evaluate run",
        params=settings.clip.model_dump(mode="json"))
    fingerprint = content_fingerprint({"inputs": inputs_fingerprint}, sorted(settings.paths.clip_dir.glob("*")))
    return register_version(mlflow_client, settings.mlflow.clip_model_name, info.model_uri, description, fingerprint)


def training_fingerprint(settings: Settings) -> str:
    """What a checkpoint must share with this run to be resumed: params, labeled covers and training code."""
    code = [Path(module.__file__) for module in (clip_data, clip_model, checkpoints, sys.modules[__name__])]
    return content_fingerprint({"clip": settings.clip.model_dump(mode="json", exclude={"checkpoint_every_steps", "num_threads"})},
                               [settings.paths.labeled_covers, *code])


def write_history(settings: Settings, history: list[EpochRecord]) -> Path:
    settings.paths.plots_dir.mkdir(parents=True, exist_ok=True)
    path = settings.paths.plots_dir / "clip_loss.csv"
    pd.DataFrame([asdict(record) for record in history]).to_csv(path, index=False)
    return path


@task(name="fine-tune-clip", cache_policy=NO_CACHE)
def fine_tune(settings: Settings) -> dict[str, object]:
    cfg, paths = settings.clip, settings.paths
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    require_inputs("finetune_clip", paths.labeled_covers)
    ensure_tracking_reachable()
    books = with_splits(pd.read_parquet(paths.labeled_covers), cfg.val_fraction, cfg.test_fraction)
    train_books, val_books = split_frame(books, "train"), split_frame(books, "val")
    test_books, needed_for_recall = split_frame(books, "test"), max(settings.evaluate.recall_k)
    if len(train_books) < 2 or len(val_books) < 2 or len(test_books) <= needed_for_recall:
        raise DataQualityError(
            f"{paths.labeled_covers}: {len(train_books)} train, {len(val_books)} validation, {len(test_books)} test books; "
            f"CLIP needs 2+ to train and validate and more than {needed_for_recall} (max evaluate.recall_k) to test. "
            "Add covers or change clip.val_fraction / clip.test_fraction")
    device = pick_device(cfg.device)
    bundle = initial_bundle(cfg, train_books["caption"].tolist(), None, device)
    train_pairs, val_pairs = pair_set(train_books, bundle.image_size), pair_set(val_books, bundle.image_size)
    log.info("fine-tuning CLIP (%s) on %s: %d train, %d val pairs", cfg.model, device, len(train_pairs), len(val_pairs))
    initial_val_loss = mean_loss(bundle, val_pairs, cfg.batch_size)
    mlflow_client = client()
    fingerprint = training_fingerprint(settings)
    checkpointer = Checkpointer(paths.clip_checkpoints, fingerprint, cfg.checkpoint_every_steps)
    previous = checkpointer.peek()
    tags = lineage_tags({"labeled_covers": paths.labeled_covers})
    with tracked_run(settings.mlflow.experiment, "fine-tune-clip", tags, resume_run_id=previous and previous.mlflow_run_id) as run_id:
        def log_epoch(record: EpochRecord) -> None:
            for key in ("train_loss", "val_loss", "pairs_per_second"):
                mlflow_client.log_metric(run_id, key, getattr(record, key), step=record.epoch)

        history, best_epoch = train(bundle, train_pairs, val_pairs, cfg, checkpointer, log_epoch, run_id)
        save_bundle(bundle, paths.clip_dir)
        mlflow_client.log_artifact(run_id, str(write_history(settings, history)))
        version = _log_run(settings, run_id, history, best_epoch, fingerprint)
    metrics = {
        "model": cfg.model, "device": str(device), "train_pairs": len(train_pairs), "val_pairs": len(val_pairs),
        "best_epoch": best_epoch, "best_val_loss": history[best_epoch - 1].val_loss,
        "initial_val_loss": initial_val_loss, "history": [asdict(record) for record in history],
        "registered_version": version, "mlflow_run_id": run_id, "resumed_from_step": previous.global_step if previous else 0,
    }
    paths.metrics_dir.mkdir(parents=True, exist_ok=True)
    (paths.metrics_dir / "clip_train.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics
