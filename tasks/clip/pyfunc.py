"""The MLflow pyfunc wrapper that the registry serves as `book-cover-clip`.

Light on imports at module level: MLflow copies the `tasks` package next to each logged model
(code_paths) and imports this wherever the model is loaded.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext


class CoverClipModel(PythonModel):
    """Embeds texts (column `text`) or cover images (column `image_path`) with the fine-tuned CLIP.

    Returns one L2-normalised `embedding` per row, so callers rank by dot product.
    """

    def load_context(self, context: PythonModelContext) -> None:
        from tasks.clip.model import load_saved_clip

        self.bundle = load_saved_clip(Path(context.artifacts["clip"]))

    def predict(self, context: PythonModelContext | None, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from tasks.clip.model import embed_image_paths, embed_texts

        frame = pd.DataFrame(model_input)
        if "text" in frame:
            vectors = embed_texts(self.bundle, frame["text"].fillna("").astype(str).tolist())
        elif "image_path" in frame:
            vectors = embed_image_paths(self.bundle, [Path(p) for p in frame["image_path"]])
        else:
            raise ValueError("book-cover-clip input needs a 'text' or an 'image_path' column")
        return pd.DataFrame({"embedding": [row.tolist() for row in vectors]})
