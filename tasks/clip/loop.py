"""The training loop: batches from the shards, forward/backward (with gradient caching), AdamW with
warmup + cosine decay, validation, checkpoints, and the best epoch by validation loss.

Built to keep a GPU busy: batches are gathered from the uint8 shards (tasks/clip/shards.py) by
DataLoader workers into pinned memory and copied asynchronously; pixels are normalised on the
device; bf16 autocast on CUDA (fp32 on CPU), fused AdamW, optional torch.compile, gradient
checkpointing and gradient caching (`accumulation_steps`). Under DDP every rank runs this loop on
its slice of each global batch; rank 0 alone validates and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from tasks.clip.checkpoints import Checkpointer, TrainState
from tasks.clip.data import CaptionInputs, PairSet, batch_loader, caption_inputs
from tasks.clip.distributed import DistContext, barrier, broadcast_value
from tasks.clip.loss import contrastive_loss
from tasks.clip.model import ClipBundle, features, normalise_pixels
from tasks.clip.sampling import epoch_batches as sampled_batches
from tasks.clip.sampling import random_batches
from tasks.platform.errors import DataQualityError
from tasks.platform.settings import ClipSettings

log = logging.getLogger(__name__)


class ContrastiveClip(torch.nn.Module):
    """CLIP as one module whose forward takes a loader batch, so DDP and torch.compile can wrap it whole."""

    def __init__(self, bundle: ClipBundle) -> None:
        super().__init__()
        self.clip = bundle.model
        self.register_buffer("mean", torch.tensor(bundle.processor.image_mean, device=bundle.device), persistent=False)
        self.register_buffer("std", torch.tensor(bundle.processor.image_std, device=bundle.device), persistent=False)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                text_features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`images` are uint8 pixels, or (2-D) a locked image tower's features; `text_features` a locked text tower's."""
        if images.dim() == 2:
            image = self.clip.project_image_features(images.float())
        else:
            image = features(self.clip.get_image_features(pixel_values=normalise_pixels(images, self.mean, self.std)))
        if text_features is not None:
            text = self.clip.project_text_features(text_features)
        else:
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


def rank_share(index_batches: list[np.ndarray], context: DistContext) -> list[np.ndarray]:
    """This rank's contiguous slice of every global batch: rank order is the order the gather restores.

    The gather needs equal slices: a batch that does not split evenly (only the one short batch of
    a data set smaller than clip.batch_size) loses its last few pairs.
    """
    world = context.world_size
    return [np.split(index[:len(index) - len(index) % world], world)[context.rank] for index in index_batches]


@torch.no_grad()
def mean_loss(bundle: ClipBundle, pairs: PairSet, batch_size: int, tokens: CaptionInputs | None = None, chunks: int = 1) -> float:
    """Validation loss over in-order batches of the global batch size, in one process (comparable across device counts).

    Each batch is embedded in `chunks` pieces (devices x accumulation_steps: what one device was
    set to hold), then scored whole.
    """
    bundle.model.eval()
    module, tokens = ContrastiveClip(bundle), tokens or caption_inputs(bundle, pairs.captions)
    total, count = 0.0, 0
    for batch in batch_loader(pairs, tokens, random_batches(len(pairs), batch_size, None), 0, False):
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


def parameter_groups(model: torch.nn.Module, cfg: ClipSettings) -> list[dict[str, object]]:
    """What the optimizer trains: heads (and a whole CLIP) at clip.learning_rate, unlocked tower layers at their own rate."""
    trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    in_tower = [parameter for name, parameter in trainable if name.startswith(("image_tower.", "text_tower."))]
    groups: list[dict[str, object]] = [{"params": [p for name, p in trainable if not name.startswith(("image_tower.", "text_tower."))]}]
    if in_tower:
        groups.append({"params": in_tower, "lr": cfg.towers.tower_learning_rate})
    return groups


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
    optimizer = torch.optim.AdamW(parameter_groups(bundle.model, cfg), lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  fused=bundle.device.type == "cuda")
    steps_per_epoch = len(random_batches(len(train_pairs), cfg.batch_size, np.random.default_rng(0)))  # either sampler
    total = max(1, steps_per_epoch * cfg.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(int(cfg.warmup_fraction * total), total))
    generator = np.random.default_rng(cfg.seed)
    state = _resume(checkpointer, bundle, optimizer, scheduler, context) or TrainState(checkpointer.fingerprint, mlflow_run_id=mlflow_run_id)
    for group in optimizer.param_groups:  # a checkpoint made on CPU resumed on a GPU: fused there, whatever was saved
        group["fused"] = bundle.device.type == "cuda"
    engine, workers = training_engine(bundle, cfg, context), loader_workers(cfg, context)
    train_tokens, val_tokens = caption_inputs(bundle, train_pairs.captions), caption_inputs(bundle, val_pairs.captions)
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        if state.epoch_rng is None:
            state.epoch_rng = generator.bit_generator.state
        generator.bit_generator.state = state.epoch_rng
        epoch_batches = sampled_batches(cfg.batch_sampler, len(train_pairs), train_pairs.groups, cfg.batch_size, generator)
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
