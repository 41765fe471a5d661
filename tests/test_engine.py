"""The data stages on a Dask cluster through Prefect's task runner write exactly what they write in one process.

One local 2-worker cluster serves the module, reached by its address as a user's existing cluster
would be (engine.cluster_address); one test lets the engine start its own local cluster.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import GeneratedData
from prefect import task
from prefect.cache_policies import NO_CACHE
from test_listing_parts import PART_ROWS, SETTINGS, assert_same_outcome, write_messy_listing

from tasks.clip.model import initial_bundle, save_bundle
from tasks.clip.shards import IMAGES, ROWS, write_shards
from tasks.genre.labeling import make_captions
from tasks.inputs.listing_parts import listing_frames, validate_listing_parts
from tasks.inputs.readers import read_covers, read_listings
from tasks.inputs.validation import validate_covers, validate_listing
from tasks.platform.engine import (
    IN_PROCESS,
    ClusterUnreachableError,
    chunk_bounds,
    describe,
    glibc_malloc_defaults,
    local_cluster_options,
    map_chunks,
)
from tasks.platform.overrides import SettingsError
from tasks.platform.sections import EngineSettings
from tasks.platform.settings import ClipSettings, SmallClipSettings, ValidateSettings, load_settings
from tasks.search.index import CoverEmbedder, embed_in_chunks

CHUNK = 16  # covers per task: the 160 test covers make 10 chunks, the last partial


@pytest.fixture(scope="module")
def cluster(prefect_harness: None) -> Iterator[EngineSettings]:
    """An existing cluster, as a user would run one: its workers report task runs to this test's Prefect API."""
    from distributed import LocalCluster

    with glibc_malloc_defaults(), LocalCluster(**local_cluster_options(2)) as local:
        yield EngineSettings(cluster_address=local.scheduler_address, chunk_covers=CHUNK)


@pytest.fixture(scope="module")
def covers(tiny_data: GeneratedData, tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, str]:
    """The generated covers (a generic covers.csv) plus a truncated, a non-image and a missing one."""
    folder = tmp_path_factory.mktemp("engine-covers")
    (folder / "img").mkdir()
    generated = pd.read_csv(tiny_data.covers_csv)
    images = []
    for n, ref in enumerate(generated["img_paths"]):
        source = tiny_data.covers_csv.parent / ref.replace("dataset/", "book-covers/")
        images.append(f"img/{n}{source.suffix}")
        shutil.copyfile(source, folder / images[-1])
    (folder / "img" / "truncated.jpg").write_bytes((folder / images[0]).read_bytes()[:150])
    (folder / "img" / "text.jpg").write_text("not an image")
    images += ["img/truncated.jpg", "img/text.jpg", "img/missing.jpg"]
    titles = [*generated["name"], "Truncated", "Text", "Missing"]
    pd.DataFrame({"title": titles, "author": "A. Writer", "image": images}).to_csv(folder / "covers.csv", index=False)
    return read_covers(folder / "covers.csv", "generic")


def test_cover_validation_on_the_cluster_keeps_and_quarantines_the_same_rows(cluster: EngineSettings, covers) -> None:
    frame, covers_format = covers
    here = validate_covers(frame, covers_format, ValidateSettings(), IN_PROCESS)
    there = validate_covers(frame, covers_format, ValidateSettings(), cluster)
    assert len(chunk_bounds(len(frame), CHUNK)) >= 4 and here.rows_in == there.rows_in == len(frame)
    assert len(here.quarantined) > 0, "the generated covers include broken ones, so both paths must find them"
    pd.testing.assert_frame_equal(here.kept, there.kept)
    pd.testing.assert_frame_equal(here.quarantined.reset_index(drop=True), there.quarantined.reset_index(drop=True))
    assert here.by_reason == there.by_reason


def test_listing_validated_in_parts_on_the_cluster_keeps_and_quarantines_the_same_rows(cluster: EngineSettings,
                                                                                       tmp_path: Path) -> None:
    paths = write_messy_listing(tmp_path)
    whole = validate_listing(read_listings(tmp_path, ["*.csv"]), SETTINGS)
    parted = validate_listing_parts(listing_frames(paths, "auto", PART_ROWS), SETTINGS, cluster, None, tmp_path / "parts")
    assert whole.rows_quarantined > 100, "the messy listing repeats books across parts"
    assert_same_outcome(whole, parted)


def test_shards_written_on_the_cluster_are_byte_identical(cluster: EngineSettings, covers, tmp_path: Path) -> None:
    frame, _ = covers
    labeled = pd.DataFrame({"book_id": frame["book_id"], "caption": frame["title"],
                            "image_path": [str(Path(root) / ref) for root, ref in zip(frame["image_root"], frame["image_ref"])]})
    here = write_shards(labeled, tmp_path / "here", 24, IN_PROCESS)
    there = write_shards(labeled, tmp_path / "there", 24, cluster)
    assert there["engine"].startswith("dask cluster at tcp://") and here["engine"] == "in process"
    assert here["failed"] == there["failed"] > 0 and here["written"] == there["written"] > 100
    assert (tmp_path / "here" / IMAGES).read_bytes() == (tmp_path / "there" / IMAGES).read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "here" / ROWS), pd.read_parquet(tmp_path / "there" / ROWS))


def test_index_vectors_embedded_on_the_cluster_match_in_process(cluster: EngineSettings, covers, tmp_path: Path) -> None:
    frame, _ = covers
    books = pd.DataFrame({"title": frame["title"], "author": frame["author"], "genre": "History", "category": "",
                          "image_path": [str(Path(root) / ref) for root, ref in zip(frame["image_root"], frame["image_ref"])]})
    books = books.tail(80).reset_index(drop=True)  # the three broken covers among them
    captions = make_captions(books, "{title} by {author}, {genre}").tolist()
    cfg = ClipSettings(model="small", device="cpu", small=SmallClipSettings(image_size=32, patch_size=8, hidden_size=32, layers=1,
                                                                            heads=2, projection_dim=32, vocab_size=300, max_text_tokens=16))
    bundle = initial_bundle(cfg, captions, None, torch.device("cpu"))
    save_bundle(bundle, tmp_path / "clip")
    images, texts, ok = embed_in_chunks(bundle, books, captions)
    there_images, there_texts, there_ok = CoverEmbedder(bundle, tmp_path / "clip", "cpu", cluster).embed(books, captions)
    np.testing.assert_array_equal(ok, there_ok)
    assert ok.sum() == 77 and images.shape == there_images.shape == (ok.sum(), 32)
    np.testing.assert_allclose(there_images, images, atol=1e-5)
    np.testing.assert_allclose(there_texts, texts, atol=1e-5)


def test_the_engine_starts_a_local_two_worker_cluster_when_given_no_address(prefect_harness: None, covers) -> None:
    frame, covers_format = covers
    engine = EngineSettings(local_workers=2, chunk_covers=40)
    assert describe(engine, 4) == "dask local cluster, 2 workers"
    here = validate_covers(frame, covers_format, ValidateSettings(), IN_PROCESS)
    there = validate_covers(frame, covers_format, ValidateSettings(), engine)
    pd.testing.assert_frame_equal(here.kept, there.kept)


@task(name="worker-malloc-setting", cache_policy=NO_CACHE)
def malloc_trim_setting(chunk: int) -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_the_engines_local_workers_keep_glibcs_malloc_tuning(prefect_harness: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask's own default (65536) made a worker decode covers 1.25x slower than a plain process."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    settings = map_chunks(malloc_trim_setting, [{"chunk": 0}, {"chunk": 1}], EngineSettings(local_workers=2), "malloc")
    assert settings == [None, None]


def test_the_malloc_setting_leaves_dasks_configuration_whole_in_a_fresh_process() -> None:
    """The engine's first local cluster in a process imports distributed inside the config change; leaving it must
    not drop distributed's defaults (a second stage's cluster then failed with KeyError: 'comm')."""
    import subprocess
    import sys

    script = ("import dask\nfrom tasks.platform.engine import glibc_malloc_defaults\n"
              "with glibc_malloc_defaults():\n    import distributed\n"
              "print(dask.config.get('distributed.comm.timeouts.connect', 'missing'))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() != "missing", done.stderr


def test_work_of_fewer_chunks_than_min_chunks_never_reaches_a_cluster() -> None:
    unreachable = EngineSettings(cluster_address="tcp://127.0.0.1:9", min_chunks=3)  # nothing listens there
    assert describe(unreachable, 2) == "in process"
    from tasks.inputs.images import probe_chunk

    facts = map_chunks(probe_chunk, [{"roots": ["/"], "refs": ["no-such-cover.jpg"], "max_pixels": 100}] * 2, unreachable, "probe")
    assert [chunk[0].error for chunk in facts] == ["no such file", "no such file"]


def test_a_scheduler_that_does_not_answer_is_one_clear_error(prefect_harness: None) -> None:
    import dask

    from tasks.inputs.images import probe_chunk

    silent = EngineSettings(cluster_address="tcp://127.0.0.1:9")  # nothing listens there
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}), pytest.raises(
            ClusterUnreachableError, match=r"engine.cluster_address=tcp://127.0.0.1:9 does not answer .*engine.kind=none"):
        map_chunks(probe_chunk, [{"roots": ["/"], "refs": ["a.jpg"], "max_pixels": 100}] * 2, silent, "probe")


def test_a_cluster_address_without_a_scheme_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"engine.cluster_address must be a scheduler address such as tcp://host:8786"):
        load_settings(tmp_path / "params.yaml", ["engine.cluster_address=scheduler:8786"])
