"""Resumable training state: safetensors only, written atomically.

`latest.safetensors` holds everything a killed run needs to continue exactly where it stopped:
the weights, AdamW's moments, the scheduler's position, the epoch and the batch within it, the
RNG states, the history so far and the MLflow run it logs to. Everything that is not a tensor
is JSON in the file's metadata, so nothing is ever unpickled. The best epoch's weights live in
`best-epoch-NNN.safetensors`, named by the state, so the two files can never disagree.

Each file is written to a temporary name, flushed to disk, then renamed over the old one: a
kill at any moment leaves either the previous checkpoint or the new one, never half of one.
A checkpoint made with other params, data or code (its fingerprint differs) is set aside,
never resumed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

LATEST = "latest.safetensors"
FORMAT = "bookcover-train-state/1"


@dataclass
class TrainState:
    fingerprint: str
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # batches done in epoch `epoch + 1`
    global_step: int = 0
    best_epoch: int = 0
    best_loss: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    epoch_rng: dict[str, Any] | None = None  # the batch-order generator at the start of epoch `epoch + 1`
    mlflow_run_id: str | None = None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through `write(temporary)`, flush it to disk, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must survive a power cut, not only the bytes
    finally:
        os.close(directory)


def best_name(epoch: int) -> str:
    return f"best-epoch-{epoch:03d}.safetensors"


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"model.{name}": tensor.detach().contiguous() for name, tensor in model.state_dict().items()}


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    saved = optimizer.state_dict()
    tensors = {f"optimizer.{index}.{key}": torch.as_tensor(value).detach().contiguous()
               for index, values in saved["state"].items() for key, value in values.items()}
    return tensors, saved["param_groups"]


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    return tensors


class Checkpointer:
    """Saves and restores one training run's state in `folder`."""

    def __init__(self, folder: Path, fingerprint: str, every_steps: int = 0) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.every_steps = every_steps

    @property
    def latest(self) -> Path:
        return self.folder / LATEST

    def save(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, state: TrainState) -> None:
        optimizer_tensors, param_groups = _optimizer_tensors(optimizer)
        tensors = {**_model_tensors(model), **optimizer_tensors, **_rng_tensors()}
        metadata = {
            "format": FORMAT,
            "state": json.dumps(asdict(state)),
            "optimizer_param_groups": json.dumps(param_groups),
            "scheduler": json.dumps(scheduler.state_dict()),
        }
        atomic_write(self.latest, lambda path: save_file(tensors, str(path), metadata=metadata))
        self._remove_stale_best(state.best_epoch)

    def save_best(self, model: torch.nn.Module, epoch: int) -> None:
        tensors = _model_tensors(model)
        atomic_write(self.folder / best_name(epoch), lambda path: save_file(tensors, str(path), metadata={"format": FORMAT}))

    def load_best(self, model: torch.nn.Module, epoch: int) -> None:
        tensors = load_file(str(self.folder / best_name(epoch)), device=str(next(model.parameters()).device))
        model.load_state_dict({name.removeprefix("model."): tensor for name, tensor in tensors.items()})

    def peek(self) -> TrainState | None:
        """The saved state of this run (same fingerprint), read from metadata alone; None otherwise."""
        return self._own_state(self._metadata())

    def _own_state(self, metadata: dict[str, str] | None) -> TrainState | None:
        if metadata is None:
            return None
        state = TrainState(**json.loads(metadata["state"]))
        return state if state.fingerprint == self.fingerprint else None

    def resume(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, set_aside: bool = True) -> TrainState | None:
        """Restore model, optimizer, scheduler and RNG from `latest` when it belongs to this run.

        `set_aside=False` for every DDP rank but 0: one process alone may move a foreign checkpoint.
        """
        metadata = self._metadata()
        state = self._own_state(metadata)
        if metadata is None or state is None:
            if set_aside:
                self._set_aside_foreign_checkpoint()
            return None
        device = next(model.parameters()).device
        tensors = load_file(str(self.latest), device="cpu")
        model.load_state_dict({k.removeprefix("model."): v.to(device) for k, v in tensors.items() if k.startswith("model.")})
        optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
        for name, tensor in tensors.items():
            if name.startswith("optimizer."):
                _, index, key = name.split(".", 2)
                optimizer_state.setdefault(int(index), {})[key] = tensor
        optimizer.load_state_dict({"state": optimizer_state, "param_groups": json.loads(metadata["optimizer_param_groups"])})
        scheduler.load_state_dict(json.loads(metadata["scheduler"]))
        torch.set_rng_state(tensors["rng.torch"])
        cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
        if cuda_states and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        log.info("resuming from %s: epoch %d done, %d batches into the next (step %d)",
                 self.latest, state.epoch, state.step_in_epoch, state.global_step)
        return state

    def _metadata(self) -> dict[str, str] | None:
        if not self.latest.is_file():
            return None
        try:
            with safe_open(str(self.latest), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as error:
            log.warning("checkpoint %s is unreadable (%s); it is set aside", self.latest, error)
            return None
        return metadata if metadata.get("format") == FORMAT else None

    def _set_aside_foreign_checkpoint(self) -> None:
        """A checkpoint of other params/data/code: keep it for inspection, out of the way."""
        if not self.folder.is_dir() or not any(self.folder.iterdir()):
            return
        aside = self.folder.with_name(self.folder.name + ".previous")
        shutil.rmtree(aside, ignore_errors=True)
        self.folder.rename(aside)
        log.warning("checkpoints in %s belong to other params, data or code; moved to %s, training starts fresh",
                    self.folder, aside)

    def _remove_stale_best(self, keep_epoch: int) -> None:
        for path in self.folder.glob("best-epoch-*.safetensors"):
            if path.name != best_name(keep_epoch):
                path.unlink(missing_ok=True)
