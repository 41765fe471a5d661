"""Zero-shot with the user's own labels: which of "Romance, Travel, Cookbooks" does this cover look
like, by the CLIP that built the cover index (the champion when it was built), one prompt per label
(search.label_prompt_template, "a book cover of {label}" by default).

The probabilities are a softmax over the given labels only, so they answer "which of these", never
"is it any of these": one label would always get 1.0, which is why at least two are required.
"""

from __future__ import annotations

import numpy as np

from tasks.clip.model import ClipBundle, embed_images, embed_texts, load_saved_clip, prompt_probabilities
from tasks.platform.errors import InputFileError
from tasks.platform.settings import Settings
from tasks.search.engine import decoded_upload


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

    def score(self, image_bytes: bytes, labels: list[str]) -> list[tuple[str, float]]:
        """Every given label with its probability, most likely first."""
        return self.score_embedding(embed_images(self.bundle, decoded_upload(image_bytes, self.bundle.image_size))[0], labels)

    def score_embedding(self, image_embed: np.ndarray, labels: list[str]) -> list[tuple[str, float]]:
        """The same for a cover already embedded by this CLIP (the page's upload, embedded once for its search)."""
        prompts = embed_texts(self.bundle, [self.prompt_template.format(label=label) for label in labels])
        probabilities = prompt_probabilities(self.bundle, prompts, image_embed)
        order = np.argsort(-probabilities, kind="stable")
        return [(labels[i], float(probabilities[i])) for i in order]
