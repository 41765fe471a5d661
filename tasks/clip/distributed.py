"""One training code path for 1 process or N (torchrun, DDP): who am I, where do I run, and the gather.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them this is a world of one and nothing
here touches torch.distributed. The contrastive loss needs every rank's embeddings as negatives;
`gather_with_grad` all-gathers them through autograd (the backward sums the gradients that
every rank's loss sends to this rank's embeddings), so N processes compute what 1 process
computes on the global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_functional

from tasks.clip.model import ClipLoadError, pick_device


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only this process logs to MLflow and writes checkpoints and models."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(requested_device: str, timeout_minutes: float = 30) -> DistContext:
    """Join the process group torchrun set up (NCCL on GPUs, gloo on CPU), or a world of one."""
    if not launched_by_torchrun():
        return DistContext(0, 1, pick_device(requested_device))
    rank, world_size, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ClipLoadError(f"process {local_rank} on this node has no GPU of its own ({torch.cuda.device_count()} here); "
                                "start at most one process per GPU (clip.devices)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=timeout_minutes))
    return DistContext(rank, world_size, device)


def shutdown(context: DistContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def gather_with_grad(tensor: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Every rank's rows, in rank order, differentiable with respect to this rank's rows."""
    if not context.distributed:
        return tensor
    return torch.cat(dist_functional.all_gather(tensor.contiguous()), dim=0)


def barrier(context: DistContext) -> None:
    if context.distributed:
        dist.barrier()


def broadcast_value(value: float, context: DistContext) -> float:
    """Rank 0's value on every rank (a validation loss only rank 0 computed)."""
    if not context.distributed:
        return value
    holder = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.broadcast(holder, src=0)
    return float(holder.item())
