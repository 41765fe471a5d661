"""Old path of the two pyfunc wrappers, kept because models registered before tasks/ was split into
domain folders unpickle `tasks.serving.GenreClassifierModel` / `CoverClipModel` from here."""

from tasks.clip.pyfunc import CoverClipModel
from tasks.genre.pyfunc import GenreClassifierModel, classifier_frame

__all__ = ["CoverClipModel", "GenreClassifierModel", "classifier_frame"]
