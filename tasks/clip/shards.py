"""Every labeled cover decoded and resized once into one uint8 shard at the model's resolution.

The training loop then never touches PIL: a batch is a gather from a memory-mapped NumPy array
(N x S x S x 3 uint8, ~150 KB a cover at 224 px), pinned, copied to the GPU and normalised
there. Chunks of covers are decoded on the data engine (tasks/platform/engine.py), each task writing
its chunk straight into its place in the file, so no pixel crosses a process boundary. A cover that cannot be decoded (validation quarantines
corrupt ones upstream, but a file can change since) gets its reason in `rows.parquet` and is
left out of training, never a crash. The folder is staged beside its target and renamed, so a
reader sees a whole shard set or none.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from tasks.clip.model import clip_image_size
from tasks.clip.shard_writer import write_chunk
from tasks.clip.towers import TOWERS, reusable_features
from tasks.platform.engine import IN_PROCESS, chunk_bounds, describe, map_chunks
from tasks.platform.errors import DataQualityError, InputFileError, UserError, require_inputs
from tasks.platform.outputs import staged_folder, write_json
from tasks.platform.settings import EngineSettings, RuntimeSettings, Settings
from tasks.platform.tracking import file_md5

log = logging.getLogger(__name__)

IMAGES, ROWS, MANIFEST, FEATURES = "images.npy", "rows.parquet", "manifest.json", "image_features.npy"


@dataclass(frozen=True)
class CoverShards:
    """A written shard set: images (memory-mapped, read-only) and one row per labeled cover."""

    images: np.ndarray
    rows: pd.DataFrame
    image_size: int
    features: np.ndarray | None = None  # the locked image tower's features of every cover (float32, memory-mapped)
    feature_tower: str | None = None

    @classmethod
    def open(cls, folder: Path, image_size: int | None) -> CoverShards:
        """The shard set in `folder`, refused unless written at `image_size` (None: at whatever size it was)."""
        require_inputs("finetune_clip", folder / IMAGES, folder / ROWS, folder / MANIFEST)
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        image_size = manifest["image_size"] if image_size is None else image_size
        if manifest["image_size"] != image_size:
            raise DataQualityError(f"{folder} holds covers at {manifest['image_size']} px but the model takes {image_size} px; "
                                   "rerun the shard_covers stage (dvc repro does it when clip.model changes)")
        tower = (manifest.get("image_features") or {}).get("tower")
        features = np.load(folder / FEATURES, mmap_mode="r") if tower else None
        return cls(np.load(folder / IMAGES, mmap_mode="r"), pd.read_parquet(folder / ROWS), image_size, features, tower)

    def features_fit(self, model: object) -> bool:
        """Whether the precomputed features are exactly what `model`'s own image tower would compute."""
        return self.features is not None and reusable_features(model, self.feature_tower, self.image_size)

    def tower_features(self, tower: str) -> np.ndarray:
        """The precomputed features of `tower`, refused when the shards hold another tower's (or none)."""
        if self.features is None or self.feature_tower != tower:
            raise DataQualityError(f"the cover shards hold image features of {self.feature_tower or 'no tower'}, not {tower}; "
                                   "rerun the shard_covers stage (dvc repro does it when clip.towers changes)")
        return self.features

    def usable(self) -> pd.DataFrame:
        """The rows whose cover decoded, with `shard_row` pointing into `images`."""
        return self.rows[self.rows["shard_error"].isna()].reset_index(drop=True)


def labeled_shards(folder: Path, image_paths: list[str]) -> CoverShards | None:
    """The shard set written for exactly these labeled covers, in this order, with tower features; else None
    (no shards, none with features, or shards of other labeled covers): callers then embed from pixels."""
    try:
        shards = CoverShards.open(folder, None)
    except (OSError, ValueError, KeyError, UserError):
        return None
    if shards.features is None or list(shards.rows["image_path"]) != list(image_paths):
        return None
    return shards


def _decode_into(images_path: Path, paths: list[str], size: int, engine: EngineSettings,
                 runtime: RuntimeSettings | None) -> list[str | None]:
    data_offset = int(np.load(images_path, mmap_mode="r").offset)
    target, paths = str(images_path.resolve()), [os.path.abspath(path) for path in paths]  # workers may sit elsewhere
    chunks = [{"images_path": target, "data_offset": data_offset, "size": size, "start": start, "paths": paths[start:stop]}
              for start, stop in chunk_bounds(len(paths), engine.chunk_covers)]
    return [error for errors in map_chunks(write_chunk, chunks, engine, f"shard covers at {size}px", runtime) for error in errors]


def write_tower_features(images_path: Path, features_path: Path, tower_name: str, batch_size: int = 64) -> dict[str, object]:
    """Every shard cover through the locked image tower, once: training, evaluation and the index reuse the rows."""
    import torch

    from tasks.clip.model import normalise_pixels
    from tasks.clip.towers import LITE_MEAN, LITE_STD, build_image_tower, image_tower_weights

    images = np.load(images_path, mmap_mode="r")
    tower = build_image_tower(tower_name, pretrained=True).eval()
    mean, std = torch.tensor(LITE_MEAN), torch.tensor(LITE_STD)
    started = time.perf_counter()
    with torch.inference_mode():
        probe = tower.extract_features(normalise_pixels(torch.from_numpy(np.array(images[:1])), mean, std))
        out = np.lib.format.open_memmap(features_path, mode="w+", dtype=np.float32, shape=(len(images), probe.shape[1]))
        for start in tqdm(range(0, len(images), batch_size), desc=f"{tower_name} features", unit="batch",
                          disable=len(images) <= batch_size):
            batch = torch.from_numpy(np.array(images[start:start + batch_size]))
            out[start:start + len(batch)] = tower.extract_features(normalise_pixels(batch, mean, std)).mean(dim=(2, 3)).numpy()
        out.flush()
    seconds = time.perf_counter() - started
    log.info("%s features of %d covers in %.1f s (%.0f covers/s)", tower_name, len(images), seconds, len(images) / max(seconds, 1e-9))
    return {"tower": tower_name, "weights_md5": file_md5(image_tower_weights(tower_name)), "dim": int(probe.shape[1]),
            "seconds": round(seconds, 1)}


def write_shards(labeled: pd.DataFrame, folder: Path, image_size: int, engine: EngineSettings = IN_PROCESS,
                 feature_tower: str | None = None, runtime: RuntimeSettings | None = None) -> dict[str, object]:
    """Decode every labeled cover into `folder` (replaced whole), and with `feature_tower` its locked features too;
    return the manifest plus the timing."""
    if labeled.empty:
        raise DataQualityError("no labeled covers to shard: the label_covers stage kept none")
    with staged_folder(folder) as staging:
        np.lib.format.open_memmap(staging / IMAGES, mode="w+", dtype=np.uint8, shape=(len(labeled), image_size, image_size, 3)).flush()
        started = time.perf_counter()
        errors = _decode_into(staging / IMAGES, labeled["image_path"].astype(str).tolist(), image_size, engine, runtime)
        seconds = time.perf_counter() - started
        rows = labeled.reset_index(drop=True).assign(shard_row=np.arange(len(labeled)), shard_error=errors)
        rows.to_parquet(staging / ROWS, index=False)
        failed = int(rows["shard_error"].notna().sum())
        # Content only, no timings: the manifest is part of what a training checkpoint must match.
        manifest = {"image_size": image_size, "layout": "uint8 NHWC, numpy .npy (memory-mappable)", "covers": len(rows),
                    "written": len(rows) - failed, "failed": failed, "bytes": (staging / IMAGES).stat().st_size}
        feature_seconds = None
        if feature_tower is not None:
            features = write_tower_features(staging / IMAGES, staging / FEATURES, feature_tower)
            feature_seconds = features.pop("seconds")
            manifest["image_features"] = features
        write_json(staging / MANIFEST, manifest)
    for reason in rows["shard_error"].dropna().head(5):
        log.warning("a cover could not be decoded and is left out of training: %s", reason)
    chunks = len(chunk_bounds(len(rows), engine.chunk_covers))
    return {**manifest, "engine": describe(engine, chunks), "seconds": round(seconds, 3),
            "covers_per_second": round(len(rows) / max(seconds, 1e-9), 1), "feature_seconds": feature_seconds}


def locked_feature_tower(settings: Settings) -> str | None:
    """The image tower whose features the shards carry: the towers model's, when it stays locked."""
    cfg = settings.clip
    return cfg.towers.image_tower if cfg.model == TOWERS and cfg.towers.image_unlocked_blocks == 0 else None


@task(name="shard-covers", cache_policy=NO_CACHE)
def shard_covers(settings: Settings) -> dict[str, object]:
    paths = settings.paths
    require_inputs("shard_covers", paths.labeled_covers)
    labeled = pd.read_parquet(paths.labeled_covers)
    if "image_path" not in labeled or "caption" not in labeled:
        raise InputFileError(f"{paths.labeled_covers} has no image_path/caption columns; rerun the label_covers stage")
    image_size = clip_image_size(settings.clip)
    manifest = write_shards(labeled, paths.cover_shards, image_size, settings.engine, locked_feature_tower(settings), settings.runtime)
    log.info("sharded %d covers at %d px (%d failed) in %.1f s: %.0f covers/s", manifest["covers"], image_size,
             manifest["failed"], manifest["seconds"], manifest["covers_per_second"])
    if manifest["written"] == 0:
        raise DataQualityError(f"none of the {manifest['covers']} labeled covers could be decoded; see {paths.cover_shards / ROWS}")
    metrics = {**manifest, "labeled_covers_md5": file_md5(paths.labeled_covers)}
    paths.metrics_dir.mkdir(parents=True, exist_ok=True)
    write_json(paths.metrics_dir / "shards.json", metrics)
    return metrics
