"""Fine-tune CLIP on (cover, caption) pairs with the symmetric contrastive loss, on 1 device or N.

Built to keep a GPU busy: batches are gathered from the uint8 shards (tasks/cover_shards.py) by
DataLoader workers into pinned memory and copied asynchronously; pixels are normalised on the
device; bf16 autocast on CUDA (fp32 on CPU), fused AdamW, optional torch.compile, gradient
checkpointing and gradient caching (`accumulation_steps`). With `clip.devices` > 1 the stage
launches torchrun and every process runs this same loop under DDP, the loss gathering the
embeddings of all ranks; rank 0 alone validates, logs to MLflow and writes checkpoints.

AdamW with warmup + cosine decay. The whole training state is checkpointed (tasks/checkpoints.py)
after every epoch and, optionally, every few steps, so a killed run continues where it stopped
when the stage is rerun with the same params and data. The epoch with the lowest validation
loss is the one saved as the fine-tuned model, logged to MLflow and registered. Whether it
becomes `champion` is the evaluation stage's call, on the test split.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
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
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import tasks
from tasks import checkpoints, clip_data, clip_model, distributed
from tasks.checkpoints import Checkpointer, TrainState
from tasks.clip_data import PairSet, Tokens, batch_loader, split_frame, with_splits
from tasks.clip_model import (
    SMALL,
    ClipBundle,
    ClipLoadError,
    clip_image_size,
    features,
    initial_bundle,
    normalise_pixels,
    pick_device,
    save_bundle,
)
from tasks.cover_shards import MANIFEST, ROWS, CoverShards
from tasks.distributed import DistContext, barrier, broadcast_value, gather_with_grad, init_distributed
from tasks.errors import DataQualityError, InputFileError, ModelLoadError, UserError, require_inputs
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

SETTINGS_FILE, RESULT_FILE = "settings.json", "result.json"


class TrainingLaunchError(UserError, RuntimeError):
    """The torchrun processes failed; their own output says why."""


# The user errors a torchrun process writes down for the stage to raise again, by class name.
REPORTABLE_ERRORS: dict[str, type[UserError]] = {error.__name__: error for error in (
    DataQualityError, InputFileError, ModelLoadError, ClipLoadError, TrainingLaunchError)}


CLIP_PIP_REQUIREMENTS = ["torch", "transformers", "safetensors", "pillow", "numpy", "pandas", "mlflow"]
MAX_LOGIT_SCALE = math.log(100.0)


def contrastive_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor,
                     context: DistContext | None = None) -> torch.Tensor:
    """CLIP's symmetric cross-entropy: each cover must pick its caption and each caption its cover.

    Under DDP every rank scores its own rows against the embeddings of the whole global batch
    (gathered with gradients), so the negatives span all ranks; the mean over ranks of these
    local losses is exactly the one-process loss on the global batch.
    """
    image_embeds = F.normalize(image_embeds.float(), dim=-1)
    text_embeds = F.normalize(text_embeds.float(), dim=-1)
    all_images, all_texts = image_embeds, text_embeds
    rank = 0
    if context is not None and context.distributed:
        all_images, all_texts, rank = gather_with_grad(image_embeds, context), gather_with_grad(text_embeds, context), context.rank
    scale = logit_scale.float().clamp(max=MAX_LOGIT_SCALE).exp()
    labels = torch.arange(len(image_embeds), device=image_embeds.device) + rank * len(image_embeds)
    return (F.cross_entropy(scale * image_embeds @ all_texts.T, labels) + F.cross_entropy(scale * text_embeds @ all_images.T, labels)) / 2


class ContrastiveClip(torch.nn.Module):
    """CLIP as one module whose forward takes a loader batch, so DDP and torch.compile can wrap it whole."""

    def __init__(self, bundle: ClipBundle) -> None:
        super().__init__()
        self.clip = bundle.model
        self.register_buffer("mean", torch.tensor(bundle.processor.image_mean, device=bundle.device), persistent=False)
        self.register_buffer("std", torch.tensor(bundle.processor.image_std, device=bundle.device), persistent=False)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = features(self.clip.get_image_features(pixel_values=normalise_pixels(images, self.mean, self.std)))
        text = features(self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
        return image, text, self.clip.logit_scale


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    seconds: float
    pairs_per_second: float


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def batches(size: int, batch_size: int, generator: np.random.Generator | None) -> list[np.ndarray]:
    """Shuffled full batches when training (a short last batch has too few negatives), in order otherwise."""
    order = generator.permutation(size) if generator is not None else np.arange(size)
    if generator is not None and size >= batch_size:
        return [order[i:i + batch_size] for i in range(0, size - batch_size + 1, batch_size)]
    return [order[i:i + batch_size] for i in range(0, size, batch_size) if len(order[i:i + batch_size]) > 1]


def rank_share(index_batches: list[np.ndarray], context: DistContext) -> list[np.ndarray]:
    """This rank's contiguous slice of every global batch: rank order is the order the gather restores.

    The gather needs equal slices: a batch that does not split evenly (only the one short batch of
    a data set smaller than clip.batch_size) loses its last few pairs.
    """
    world = context.world_size
    return [np.split(index[:len(index) - len(index) % world], world)[context.rank] for index in index_batches]


@torch.no_grad()
def mean_loss(bundle: ClipBundle, pairs: PairSet, batch_size: int, tokens: Tokens | None = None, chunks: int = 1) -> float:
    """Validation loss over in-order batches of the global batch size, in one process (comparable across device counts).

    Each batch is embedded in `chunks` pieces (devices x accumulation_steps: what one device was
    set to hold), then scored whole.
    """
    bundle.model.eval()
    module, tokens = ContrastiveClip(bundle), tokens or Tokens.encode(bundle, pairs.captions)
    total, count = 0.0, 0
    for batch in batch_loader(pairs, tokens, batches(len(pairs), batch_size, None), 0, False):
        batch = to_device(batch, bundle.device)
        with autocast(bundle.device):
            outputs = [module(**part) for part in split_batch(batch, chunks)]
        image, text = torch.cat([image for image, _, _ in outputs]), torch.cat([text for _, text, _ in outputs])
        total += contrastive_loss(image, text, outputs[0][2]).item() * len(image)
        count += len(image)
    return total / max(1, count)


def split_batch(batch: dict[str, torch.Tensor], chunks: int) -> list[dict[str, torch.Tensor]]:
    return [dict(zip(batch, values)) for values in zip(*(value.chunk(chunks) for value in batch.values()))]


def backward_step(engine: torch.nn.Module, batch: dict[str, torch.Tensor], chunks: int, context: DistContext) -> torch.Tensor:
    """Forward + backward of one optimizer step's batch (this rank's share); returns the loss, detached.

    With `chunks` > 1 the batch is embedded chunk by chunk without a graph, the loss over the
    whole batch gives the gradient of every embedding, and each chunk is then re-embedded and
    back-propagated from those gradients (gradient caching). Activations of one chunk at a time,
    the same loss and gradients as one pass: accumulation keeps every negative, unlike summing
    per-chunk losses. CLIP has no dropout, so the re-embedding is identical to the first.
    """
    device, ddp = next(engine.parameters()).device, _ddp_of(engine)
    if chunks == 1:
        with autocast(device):
            image, text, scale = engine(**batch)
        loss = contrastive_loss(image, text, scale, context)
        loss.backward()
        return loss.detach()
    parts = split_batch(batch, chunks)
    with torch.no_grad(), autocast(device):
        outputs = [engine(**part) for part in parts]
    images = torch.cat([image for image, _, _ in outputs]).float().requires_grad_()
    texts = torch.cat([text for _, text, _ in outputs]).float().requires_grad_()
    scale = outputs[0][2].detach().requires_grad_()
    loss = contrastive_loss(images, texts, scale, context)
    loss.backward()
    sizes = [len(part["images"]) for part in parts]
    for number, (part, image_grad, text_grad) in enumerate(zip(parts, images.grad.split(sizes), texts.grad.split(sizes))):
        last = number == len(parts) - 1
        with (contextlib.nullcontext() if last or not isinstance(ddp, DDP) else ddp.no_sync()):
            with autocast(device):
                image, text, scale_out = engine(**part)
            outputs_and_grads = [(image, image_grad.to(image.dtype)), (text, text_grad.to(text.dtype))]
            if last:  # the scale's gradient came whole from the loss; it joins the one synchronised backward
                outputs_and_grads.append((scale_out, scale.grad))
            torch.autograd.backward(*zip(*outputs_and_grads))
    return loss.detach()


def global_mean(value: torch.Tensor, context: DistContext) -> torch.Tensor:
    if context.distributed:
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= context.world_size
    return value


def schedule(warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def loader_workers(cfg: ClipSettings, context: DistContext) -> int:
    """Configured, or on a GPU up to 4 gathering processes per rank (on CPU they would steal the compute's cores)."""
    if cfg.loader_workers is not None:
        return cfg.loader_workers
    return min(4, max(1, (os.cpu_count() or 1) // context.world_size - 1)) if context.device.type == "cuda" else 0


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant (it composes with DDP and torch.compile); transformers 5 renamed the switch."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:  # transformers 4
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def training_engine(bundle: ClipBundle, cfg: ClipSettings, context: DistContext) -> torch.nn.Module:
    """The module the loop calls: CLIP with the loader's batch as input, under DDP and torch.compile when asked."""
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(bundle.model)
    engine: torch.nn.Module = ContrastiveClip(bundle)
    if context.distributed:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        engine = DDP(engine, device_ids=device_ids, broadcast_buffers=False)
    if cfg.compile:
        engine = torch.compile(engine)
    return engine


def _ddp_of(engine: torch.nn.Module) -> torch.nn.Module:
    """The DDP module under torch.compile's wrapper (its `no_sync` is not forwarded by the wrapper)."""
    return getattr(engine, "_orig_mod", engine)


def train(bundle: ClipBundle, train_pairs: PairSet, val_pairs: PairSet, cfg: ClipSettings, checkpointer: Checkpointer,
          on_epoch: Callable[[EpochRecord], None] = lambda record: None, mlflow_run_id: str | None = None,
          context: DistContext | None = None) -> tuple[list[EpochRecord], int]:
    """Train to cfg.epochs, resuming from the checkpoint when one of this run exists; reload the best epoch.

    The batch order of each epoch comes from a generator whose state at the epoch's start is
    checkpointed, so a run resumed mid-epoch sees exactly the batches it would have seen. Every
    rank draws the same order and takes its slice of each global batch; rank 0 alone validates,
    calls `on_epoch` and writes checkpoints.
    """
    context = context or DistContext(0, 1, bundle.device)
    optimizer = torch.optim.AdamW(bundle.model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  fused=bundle.device.type == "cuda")
    steps_per_epoch = len(batches(len(train_pairs), cfg.batch_size, np.random.default_rng(0)))
    total = max(1, steps_per_epoch * cfg.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(int(cfg.warmup_fraction * total), total))
    generator = np.random.default_rng(cfg.seed)
    state = _resume(checkpointer, bundle, optimizer, scheduler, context) or TrainState(checkpointer.fingerprint, mlflow_run_id=mlflow_run_id)
    for group in optimizer.param_groups:  # a checkpoint made on CPU resumed on a GPU: fused there, whatever was saved
        group["fused"] = bundle.device.type == "cuda"
    engine, workers = training_engine(bundle, cfg, context), loader_workers(cfg, context)
    train_tokens, val_tokens = Tokens.encode(bundle, train_pairs.captions), Tokens.encode(bundle, val_pairs.captions)
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if state.epoch_rng is None:
            state.epoch_rng = generator.bit_generator.state
        generator.bit_generator.state = state.epoch_rng
        epoch_batches = batches(len(train_pairs), cfg.batch_size, generator)
        started = time.perf_counter()
        bundle.model.train()
        done_before = state.step_in_epoch
        loader = batch_loader(train_pairs, train_tokens, rank_share(epoch_batches[done_before:], context), workers,
                              pin=bundle.device.type == "cuda")
        losses: list[torch.Tensor] = []
        for batch in tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False, initial=done_before,
                          total=len(epoch_batches), disable=not context.is_main):
            losses.append(global_mean(backward_step(engine, to_device(batch, bundle.device), cfg.accumulation_steps, context), context))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step_in_epoch += 1
            state.global_step += 1
            if checkpointer.every_steps and state.global_step % checkpointer.every_steps == 0 and state.step_in_epoch < len(epoch_batches):
                state.epoch_losses += [loss.item() for loss in losses]
                losses = []
                _save(checkpointer, bundle, optimizer, scheduler, state, context)
        state.epoch_losses += [loss.item() for loss in losses]
        seconds = time.perf_counter() - started
        val_loss = mean_loss(bundle, val_pairs, cfg.batch_size, val_tokens, cfg.devices * cfg.accumulation_steps) if context.is_main else math.nan
        record = EpochRecord(epoch, float(np.mean(state.epoch_losses)) if state.epoch_losses else math.nan,
                             broadcast_value(val_loss, context), seconds,
                             (state.step_in_epoch - done_before) * cfg.batch_size / max(seconds, 1e-9))
        if context.is_main:
            log.info("epoch %d: train %.4f, val %.4f, %.0f pairs/s", epoch, record.train_loss, record.val_loss, record.pairs_per_second)
            on_epoch(record)  # before the checkpoint: a kill in between repeats a log line rather than losing one
            if record.val_loss < state.best_loss:
                checkpointer.save_best(bundle.model, epoch)
        if record.val_loss < state.best_loss:
            state.best_epoch, state.best_loss = epoch, record.val_loss
        state.history.append(asdict(record))
        state.epoch, state.step_in_epoch, state.epoch_losses = epoch, 0, []
        state.epoch_rng = generator.bit_generator.state
        _save(checkpointer, bundle, optimizer, scheduler, state, context)
    history = [EpochRecord(**record) for record in state.history]
    if state.best_epoch == 0:
        raise DataQualityError(f"CLIP training diverged: no epoch had a finite validation loss "
                               f"({[r.val_loss for r in history]}); lower clip.learning_rate")
    if context.is_main:  # the only process that saves the model
        checkpointer.load_best(bundle.model, state.best_epoch)
    return history, state.best_epoch


def _resume(checkpointer: Checkpointer, bundle: ClipBundle, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler, context: DistContext) -> TrainState | None:
    """Rank 0 first (it alone may set a foreign checkpoint aside), then the others read what it left."""
    state = checkpointer.resume(bundle.model, optimizer, scheduler) if context.is_main else None
    barrier(context)
    if not context.is_main:
        state = checkpointer.resume(bundle.model, optimizer, scheduler, set_aside=False)
    return state


def _save(checkpointer: Checkpointer, bundle: ClipBundle, optimizer: torch.optim.Optimizer,
          scheduler: torch.optim.lr_scheduler.LRScheduler, state: TrainState, context: DistContext) -> None:
    if context.is_main:
        checkpointer.save(bundle.model, optimizer, scheduler, state)
    barrier(context)


def pair_set(books: pd.DataFrame, shards: CoverShards) -> PairSet:
    return PairSet(shards.images, books["caption"].tolist(), books["shard_row"].to_numpy())


# Knobs that change how fast training runs, never what it learns: a checkpoint resumes across them
# (e.g. a run started on 1 GPU continues on 4, or with gradient caching to fit memory).
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
    """What a checkpoint must share with this run to be resumed: params, labeled covers, shards and training code."""
    code = [Path(module.__file__) for module in (clip_data, clip_model, checkpoints, distributed, sys.modules[__name__])]
    shards = [settings.paths.cover_shards / name for name in (ROWS, MANIFEST)]
    return content_fingerprint({"clip": settings.clip.model_dump(mode="json", exclude=THROUGHPUT_KNOBS)},
                               [settings.paths.labeled_covers, *shards, *code])


def write_history(settings: Settings, history: list[EpochRecord]) -> Path:
    settings.paths.plots_dir.mkdir(parents=True, exist_ok=True)
    path = settings.paths.plots_dir / "clip_loss.csv"
    pd.DataFrame([asdict(record) for record in history]).to_csv(path, index=False)
    return path


@dataclass
class TrainingResult:
    """What the training processes hand back to the stage (as JSON when they ran under torchrun)."""

    history: list[dict[str, float]]
    best_epoch: int
    initial_val_loss: float
    train_pairs: int
    val_pairs: int
    device: str
    world_size: int
    resumed_from_step: int


def training_splits(settings: Settings, shards: CoverShards) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and validation books (covers that decoded), refusing splits too small to train, validate or test."""
    cfg = settings.clip
    books = with_splits(shards.usable(), cfg.val_fraction, cfg.test_fraction)
    train_books, val_books = split_frame(books, "train"), split_frame(books, "val")
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


def launch_dir(settings: Settings) -> Path:
    """Where the stage and its torchrun processes exchange settings, the small tokenizer and the result."""
    return settings.paths.clip_checkpoints.with_name(settings.paths.clip_checkpoints.name + ".launch")


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
    train_pairs, val_pairs = pair_set(train_books, shards), pair_set(val_books, shards)
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


def single_node(cfg: ClipSettings) -> bool:
    """No rendezvous in clip.torchrun_args: all processes on this machine."""
    return not any(argument.startswith(("--nnodes", "--rdzv")) for argument in cfg.torchrun_args)


def check_devices(cfg: ClipSettings) -> None:
    """One process per GPU: more processes than this machine has GPUs is a param to fix, not a crash in every rank."""
    on_gpu = pick_device(cfg.device).type == "cuda"
    if on_gpu and single_node(cfg) and cfg.devices > torch.cuda.device_count():
        raise ClipLoadError(f"clip.devices={cfg.devices} but this machine has {torch.cuda.device_count()} GPU(s); "
                            "lower clip.devices")


def torchrun_command(cfg: ClipSettings, launch: Path, run_id: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *(["--standalone"] if single_node(cfg) else []),
            f"--nproc_per_node={cfg.devices}", *cfg.torchrun_args, "-m", "tasks.clip_worker", str(launch), run_id]


def launch_torchrun(settings: Settings, run_id: str) -> TrainingResult:
    """Run training in `clip.devices` processes (DDP) and read back what rank 0 reported."""
    launch = launch_dir(settings)
    shutil.rmtree(launch, ignore_errors=True)
    launch.mkdir(parents=True)
    (launch / SETTINGS_FILE).write_text(settings.model_dump_json(by_alias=True), encoding="utf-8")
    command = torchrun_command(settings.clip, launch, run_id)
    log.info("launching %d training processes: %s", settings.clip.devices, shlex.join(command))
    returncode = subprocess.run(command, check=False).returncode
    errors = sorted(launch.glob("error-rank*.json"))
    if errors:
        reported = json.loads(errors[0].read_text(encoding="utf-8"))
        raise REPORTABLE_ERRORS.get(reported["type"], TrainingLaunchError)(reported["message"])
    if returncode != 0 or not (launch / RESULT_FILE).is_file():
        raise TrainingLaunchError(f"torchrun exited with status {returncode}; the training processes' output is above. "
                                  "Checkpoints are kept: rerun the stage to resume")
    return TrainingResult(**json.loads((launch / RESULT_FILE).read_text(encoding="utf-8")))


@task(name="fine-tune-clip", cache_policy=NO_CACHE)
def fine_tune(settings: Settings) -> dict[str, object]:
    cfg, paths = settings.clip, settings.paths
    require_inputs("finetune_clip", paths.labeled_covers, paths.cover_shards)
    ensure_tracking_reachable()
    training_splits(settings, CoverShards.open(paths.cover_shards, clip_image_size(cfg)))  # refuse before launching anything
    fingerprint = training_fingerprint(settings)
    previous = Checkpointer(paths.clip_checkpoints, fingerprint).peek()
    tags = lineage_tags({"labeled_covers": paths.labeled_covers, "cover_shards": paths.cover_shards / ROWS})
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
    paths.metrics_dir.mkdir(parents=True, exist_ok=True)
    (paths.metrics_dir / "clip_train.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics
