"""The shard writer: every cover decoded once, exactly as `load_cover` decodes it, and no cover lost silently."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA
from PIL import Image

from tasks.clip.shards import IMAGES, MANIFEST, ROWS, CoverShards, write_shards
from tasks.inputs.images import load_cover
from tasks.platform.errors import DataQualityError
from tasks.platform.sections import EngineSettings

REAL_COVERS = SHARED_DATA / "bookdepository-covers" / "book-covers"


def _covers(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"cover-{i}.{'jpg' if i % 2 else 'png'}"
        pixels = rng.integers(0, 256, size=(int(rng.integers(40, 90)), int(rng.integers(30, 70)), 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG" if i % 2 else "PNG")
        paths.append(str(path))
    return paths


def _labeled(paths: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"book_id": [f"b{i}" for i in range(len(paths))], "image_path": paths,
                         "caption": [f"caption {i}" for i in range(len(paths))]})


def test_every_cover_is_written_as_load_cover_decodes_it_and_failures_keep_their_reason(tmp_path: Path) -> None:
    paths = _covers(tmp_path, 6)
    (tmp_path / "truncated.jpg").write_bytes(Path(paths[1]).read_bytes()[:200])
    (tmp_path / "text.jpg").write_text("not an image")
    paths[2:2] = [str(tmp_path / "truncated.jpg"), str(tmp_path / "text.jpg"), str(tmp_path / "missing.jpg")]
    manifest = write_shards(_labeled(paths), tmp_path / "shards", 24)

    shards = CoverShards.open(tmp_path / "shards", 24)
    assert len(shards.rows) == len(paths) == manifest["covers"] == manifest["written"] + manifest["failed"]
    assert manifest["failed"] == 3 and shards.images.shape == (len(paths), 24, 24, 3) and shards.images.dtype == np.uint8
    failed = shards.rows[shards.rows["shard_error"].notna()]
    assert failed["image_path"].tolist() == paths[2:5]
    assert failed["shard_error"].str.contains("Error").all()
    usable = shards.usable()
    assert usable["book_id"].tolist() == [f"b{i}" for i in (0, 1, 5, 6, 7, 8)]
    for _, row in usable.iterrows():
        np.testing.assert_array_equal(shards.images[row["shard_row"]], load_cover(Path(row["image_path"]), 24))
    assert not (tmp_path / "shards.staging").exists()
    assert json.loads((tmp_path / "shards" / MANIFEST).read_text())["image_size"] == 24


def test_chunks_fill_their_own_rows_in_place(tmp_path: Path) -> None:
    chunk = 8
    paths = _covers(tmp_path, 2 * chunk + 3)  # three chunks, the last partial
    write_shards(_labeled(paths), tmp_path / "shards", 16, EngineSettings(kind="none", chunk_covers=chunk))
    images = np.load(tmp_path / "shards" / IMAGES, mmap_mode="r")
    for row in (0, chunk - 1, chunk, 2 * chunk, len(paths) - 1):
        np.testing.assert_array_equal(images[row], load_cover(Path(paths[row]), 16))


def test_a_rewrite_replaces_the_folder_whole(tmp_path: Path) -> None:
    paths = _covers(tmp_path, 4)
    write_shards(_labeled(paths), tmp_path / "shards", 16)
    write_shards(_labeled(paths[:2]), tmp_path / "shards", 20)
    assert np.load(tmp_path / "shards" / IMAGES, mmap_mode="r").shape == (2, 20, 20, 3)
    assert len(pd.read_parquet(tmp_path / "shards" / ROWS)) == 2


def test_shards_at_another_resolution_are_refused_with_the_stage_to_rerun(tmp_path: Path) -> None:
    write_shards(_labeled(_covers(tmp_path, 2)), tmp_path / "shards", 16)
    with pytest.raises(DataQualityError, match="16 px but the model takes 224 px; rerun the shard_covers stage"):
        CoverShards.open(tmp_path / "shards", 224)


def test_no_covers_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataQualityError, match="no labeled covers"):
        write_shards(_labeled([]), tmp_path / "shards", 16)


@pytest.mark.skipif(not REAL_COVERS.is_dir(), reason=f"real covers not present at {REAL_COVERS}")
def test_real_covers_at_vit_b32_resolution(tmp_path: Path) -> None:
    paths = sorted(str(path) for path in REAL_COVERS.glob("*/*.jpg"))[:300]
    manifest = write_shards(_labeled(paths), tmp_path / "shards", 224)
    assert manifest["written"] == 300 and manifest["bytes"] >= 300 * 224 * 224 * 3
    images = np.load(tmp_path / "shards" / IMAGES, mmap_mode="r")
    for row in (0, 150, 299):
        np.testing.assert_array_equal(images[row], load_cover(Path(paths[row]), 224))
        assert images[row].std() > 5  # a real picture, not a blank
