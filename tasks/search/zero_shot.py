"""Zero-shot with the user's own labels: which of "Romance, Travel, Cookbooks" does this cover look
like, by the CLIP that built the cover index (the champion when it was built), one prompt per label
(search.label_prompt_template, "a book cover of {label}" by default).

The probabilities are a softmax over the given labels only, so they answer "which of these", never
"is it any of these": one label would always get 1.0, which is why at least two are required.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tasks.clip.model import ClipBundle, embed_images, embed_texts, load_saved_clip
from tasks.platform.errors import InputFileError
from tasks.platform.settings import Settings
from tasks.search.engine import decoded_upload


@dataclass(frozen=True)
class LabelScores:
    labels: list[tuple[str, float]]  # every given label, most likely first


class ZeroShotLabels:
    """Scores covers against any labels with one loaded CLIP; load once, ask many times."""

    def __init__(self, bundle: ClipBundle, prompt_template: str) -> None:
        self.bundle, self.prompt_template = bundle, prompt_template

    @classmethod
    def from_settings(cls, settings: Settings) -> ZeroShotLabels:
        folder = settings.paths.cover_index / "clip"
        if not folder.is_dir():
            raise InputFileError(f"{folder}: no CLIP beside the cover index; run the index_covers stage (`make run`)")
        return cls(load_saved_clip(folder, settings.clip.device), settings.search.label_prompt_template)

    def score(self, image_bytes: bytes, labels: list[str]) -> LabelScores:
        image = embed_images(self.bundle, decoded_upload(image_bytes, self.bundle.image_size))[0]
        prompts = embed_texts(self.bundle, [self.prompt_template.format(label=label) for label in labels])
        logits = torch.from_numpy(prompts @ image) * self.bundle.model.logit_scale.exp().item()
        probabilities = torch.softmax(logits, dim=0).numpy()
        order = np.argsort(-probabilities, kind="stable")
        return LabelScores([(labels[i], float(probabilities[i])) for i in order])
