"""Checks on what a user typed or sent to the search (labels, files), light enough to run before a
model loads: a typo answers at once. The sentences are for the person who typed it."""

from __future__ import annotations

import re
from pathlib import Path

from tasks.platform.errors import UserError


class SearchInputError(UserError, ValueError):
    """A query the search cannot answer: the message is for the person who typed it."""


MAX_LABELS = 200
MAX_LABEL_CHARS = 100


def parse_labels(text: str) -> list[str]:
    """Comma- or newline-separated labels, trimmed, blank ones dropped, repeats (any case) kept once."""
    labels, seen = [], set()
    for label in re.split(r"[,\n]", text or ""):
        label = " ".join(label.split())
        if label and label.casefold() not in seen:
            seen.add(label.casefold())
            labels.append(label)
    if len(labels) < 2:
        given = f"only {labels[0]!r}" if labels else "none"
        raise SearchInputError(f"give two or more labels, comma-separated (got {given}): over one label the "
                               'probability is always 1; e.g. --labels "Romance, Travel, Cookbooks"')
    if len(labels) > MAX_LABELS:
        raise SearchInputError(f"{len(labels)} labels; at most {MAX_LABELS} (to find covers among many more, use "
                               "bookcovers search)")
    too_long = next((label for label in labels if len(label) > MAX_LABEL_CHARS), None)
    if too_long is not None:
        raise SearchInputError(f"the label {too_long[:40]!r}... is over {MAX_LABEL_CHARS} characters; a label is a few words")
    return labels


def read_cover(path: Path) -> bytes:
    """The file's bytes, once Pillow has recognised an image in it (before any model loads)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise SearchInputError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise SearchInputError(f"{path}: the file is not an image this search can read ({type(error).__name__})") from error
    return path.read_bytes()
