"""The MLflow pyfunc wrapper that the registry serves as `book-genre-classifier`.

Kept apart from the training code and light on imports, because MLflow copies this package
next to each logged model (code_paths) and imports it wherever the model is loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext


def classifier_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The two text columns the classifier reads, missing authors as empty strings."""
    if "title" not in frame:
        raise ValueError(f"classifier input needs a 'title' column (and optionally 'author'); got {list(frame.columns)}")
    title = frame["title"].fillna("").astype(str)
    author = frame["author"].fillna("").astype(str) if "author" in frame else pd.Series("", index=frame.index)
    return pd.DataFrame({"title": title, "author": author})


class GenreClassifierModel(PythonModel):
    """title + author -> genre and its probability: the contract of `book-genre-classifier`."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def predict(self, context: PythonModelContext | None, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        probabilities = self.pipeline.predict_proba(classifier_frame(frame))
        best = np.argmax(probabilities, axis=1)
        classes = np.asarray(self.pipeline.classes_)
        return pd.DataFrame({"genre": classes[best], "probability": probabilities[np.arange(len(best)), best]}, index=frame.index)
