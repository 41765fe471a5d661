"""The covers CLIP trains and is evaluated on: split by book, decoded once into uint8 arrays.

Splitting hashes the book id (ISBN), so a book, whichever categories it is shelved under,
lands in exactly one split and the test split cannot leak. Images are decoded and resized
once (the shard_covers stage for training, `load_images` elsewhere) and kept as compact uint8;
normalisation happens on the device. Captions are tokenized once per run; a batch is then two
gathers (pixels from the shard, token ids from an array) that DataLoader workers run ahead of
the GPU, in pinned memory.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tasks.clip.model import ClipBundle
from tasks.inputs.images import load_cover

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def book_split(book_id: str, val_fraction: float, test_fraction: float) -> str:
    bucket = int(hashlib.md5(f"clip:{book_id}".encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + val_fraction:
        return "val"
    return "train"


def in_training_fraction(book_id: str, fraction: float) -> bool:
    """Whether a training book is in the first `fraction` of them, by a hash of its own (independent of the
    split's): the 10 % are inside the 25 %, inside the 50 %, so a learning curve adds books, never swaps them."""
    return fraction >= 1.0 or int(hashlib.md5(f"fraction:{book_id}".encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


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


def test_books_digest(books: pd.DataFrame, val_fraction: float, test_fraction: float) -> str:
    """Which books a model is tested on: two CLIP versions with equal digests can be compared on them."""
    test_ids = sorted(split_frame(with_splits(books, val_fraction, test_fraction), "test")["book_id"].astype(str))
    return hashlib.sha256("\n".join(test_ids).encode("utf-8")).hexdigest()[:16]


@dataclass
class PairSet:
    """(cover, caption) pairs: pair i is images[rows[i]] (rows None: images[i]) with captions[i].

    In training `images` is the memory-mapped shard, so no pixel is read before its batch is.
    """

    images: np.ndarray
    captions: list[str]
    rows: np.ndarray | None = None
    groups: np.ndarray | None = None  # each pair's predicted genre, for clip.batch_sampler=balanced

    def __len__(self) -> int:
        return len(self.captions)

    def pixels(self, index: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.images[index if self.rows is None else self.rows[index]])


TOKEN_WIDTH_MULTIPLE = 8  # a batch's token width is rounded up to this: fewer shapes for torch.compile, aligned matmuls


@dataclass
class Tokens:
    """Every caption tokenized once, padded to the model's limit; a batch takes the width it needs."""

    ids: np.ndarray
    lengths: np.ndarray

    @classmethod
    def encode(cls, bundle: ClipBundle, captions: list[str]) -> Tokens:
        encoded = bundle.tokenizer(captions, padding="max_length", truncation=True, max_length=bundle.max_text_tokens,
                                   return_tensors="np")
        return cls(encoded["input_ids"].astype(np.int64), encoded["attention_mask"].sum(axis=1).astype(np.int64))

    def batch(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        """Padding past the longest caption changes nothing under CLIP's causal mask, so it is cut."""
        longest = int(self.lengths[index].max())
        width = min(self.ids.shape[1], -(-longest // TOKEN_WIDTH_MULTIPLE) * TOKEN_WIDTH_MULTIPLE)
        mask = np.arange(width)[None, :] < self.lengths[index][:, None]
        return {"input_ids": torch.from_numpy(self.ids[index, :width]), "attention_mask": torch.from_numpy(mask.astype(np.int64))}


@dataclass
class TextFeatures:
    """A locked text tower's features of every caption, computed once: training then runs only the text head."""

    values: np.ndarray

    @classmethod
    @torch.inference_mode()
    def encode(cls, bundle: ClipBundle, captions: list[str], batch_size: int = 256) -> TextFeatures:
        bundle.model.eval()
        parts = []
        for start in tqdm(range(0, len(captions), batch_size), desc="text tower features", unit="batch",
                          disable=len(captions) <= batch_size):
            encoded = bundle.tokenizer(captions[start:start + batch_size], padding="longest", truncation=True,
                                       max_length=bundle.max_text_tokens, return_tensors="pt")
            parts.append(bundle.model.tower_text_features(encoded["input_ids"].to(bundle.device),
                                                          encoded["attention_mask"].to(bundle.device)).float().cpu())
        width = bundle.model.towers_config.text_feature_dim
        return cls(torch.cat(parts).numpy() if parts else np.zeros((0, width), np.float32))

    def batch(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        return {"text_features": torch.from_numpy(np.ascontiguousarray(self.values[index]))}


CaptionInputs = Tokens | TextFeatures


def caption_inputs(bundle: ClipBundle, captions: list[str]) -> CaptionInputs:
    """What a batch carries for its captions: token ids, or a locked text tower's features."""
    if getattr(bundle.model, "text_tower_locked", False):
        return TextFeatures.encode(bundle, captions)
    return Tokens.encode(bundle, captions)


class PairBatches(Dataset):
    """Item i is batch i, whole: one gather per batch instead of a collate over single pairs."""

    def __init__(self, pairs: PairSet, tokens: CaptionInputs, index_batches: list[np.ndarray]) -> None:
        self.pairs, self.tokens, self.index_batches = pairs, tokens, index_batches

    def __len__(self) -> int:
        return len(self.index_batches)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        index = self.index_batches[item]
        return {"images": torch.from_numpy(self.pairs.pixels(index)), **self.tokens.batch(index)}


def batch_loader(pairs: PairSet, tokens: CaptionInputs, index_batches: list[np.ndarray], workers: int, pin: bool) -> DataLoader:
    """Batches gathered by `workers` processes (0: in this one), `prefetch` ahead, pinned for async copies."""
    return DataLoader(PairBatches(pairs, tokens, index_batches), batch_size=None, shuffle=False, num_workers=workers,
                      pin_memory=pin, prefetch_factor=4 if workers else None)
