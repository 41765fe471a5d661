"""CLIP's symmetric contrastive loss, kept apart from the model and the loop as open_clip keeps it.

Under DDP the loss all-gathers the embeddings of every rank with their gradients, so each rank's
local loss has the whole global batch as negatives and DDP's gradient averaging gives exactly the
one-process gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tasks.clip.distributed import DistContext, gather_with_grad

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
