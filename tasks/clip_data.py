"""The covers CLIP trains and is evaluated on: split by book, decoded once into uint8 arrays.

Splitting hashes the book id (ISBN), so a book, whichever categories it is shelved under,
lands in exactly one split and the test split cannot leak. Images are decoded and resized
once per run, in parallel, and kept as compact uint8; normalisation happens on the device.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from tasks.clip_model import load_cover

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def book_split(book_id: str, val_fraction: float, test_fraction: float) -> str:
    bucket = int(hashlib.md5(f"clip:{book_id}".encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + val_fraction:
        return "val"
    return "train"


def with_splits(books: pd.DataFrame, val_fraction: float, test_fraction: float) -> pd.DataFrame:
    books = books.copy()
    books["split"] = [book_split(book_id, val_fraction, test_fraction) for book_id in books["book_id"]]
    return books


def _safe_load(path: str, size: int) -> np.ndarray | None:
    try:
        return load_cover(Path(path), size)
    except (OSError, ValueError) as error:
        log.warning("cover %s could not be decoded (%s); it is left out", path, error)
        return None


def load_images(paths: list[str], size: int, workers: int = 2, desc: str = "decode covers") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 NHWC, mask of paths that decoded). A cover that fails is masked, never fatal."""
    loader = partial(_safe_load, size=size)
    if workers > 1 and len(paths) >= 256:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            decoded = list(tqdm(pool.map(loader, paths, chunksize=64), total=len(paths), desc=desc, unit="img"))
    else:
        decoded = [loader(path) for path in tqdm(paths, desc=desc, unit="img", disable=len(paths) < 256)]
    ok = np.array([image is not None for image in decoded], dtype=bool)
    images = np.stack([image for image in decoded if image is not None]) if ok.any() else np.zeros((0, size, size, 3), np.uint8)
    return images, ok


def split_frame(books: pd.DataFrame, split: str) -> pd.DataFrame:
    return books[books["split"] == split].reset_index(drop=True)
