"""The cover index's nearest rows: exact below a size, FAISS inverted lists above it, built a chunk at a time."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from tasks.platform.sections import VectorIndexSettings
from tasks.search.vectors import (
    ApproximateVectors,
    ExactVectors,
    VectorFile,
    VectorWriter,
    build_approximate,
    index_plan,
    open_vectors,
    write_approximate,
)


def clustered(rows: int, dim: int = 32, centers: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors in clusters, as cover embeddings are (by genre, by series): what inverted lists exploit."""
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centers, dim))
    vectors = middle[rng.integers(0, centers, rows)] + 0.6 * rng.standard_normal((rows, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def saved(folder: Path, vectors: np.ndarray, queries: np.ndarray | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "images.npy", vectors)
    np.save(folder / "captions.npy", vectors if queries is None else queries)
    return folder


def recall_at_10(approximate: ApproximateVectors | ExactVectors, exact: ExactVectors, queries: np.ndarray) -> float:
    return float(np.mean([len(set(approximate.top(q, 10)[0]) & set(exact.top(q, 10)[0])) / 10 for q in queries]))


def test_small_collections_stay_exact_and_big_ones_get_lists_near_the_square_root() -> None:
    settings = VectorIndexSettings(approximate_above=1_000_000)
    assert index_plan(1_000_000, settings) is None
    assert index_plan(10_000_000, settings) == {"factory": "IVF4096,SQ8", "lists": 4096, "probes": 256, "rerank": 40}
    assert index_plan(2_000, VectorIndexSettings(approximate_above=10))["lists"] == 32  # ~39 training rows a list
    assert index_plan(50_000, VectorIndexSettings(approximate_above=10, lists=64, probes=999, codes="PQ8"))["factory"] == "IVF64,PQ8"
    assert index_plan(50_000, VectorIndexSettings(approximate_above=10, lists=64, probes=999))["probes"] == 64


def test_rows_are_read_by_range_and_gathered_across_chunks(tmp_path: Path) -> None:
    vectors = clustered(2_500)
    saved(tmp_path, vectors)
    source = VectorFile(tmp_path / "images.npy")
    np.testing.assert_array_equal(source.read(1_000, 1_700), vectors[1_000:1_700])
    np.testing.assert_array_equal(source.read(2_400, 9_999), vectors[2_400:])
    rows = np.array([0, 999, 1_000, 1_001, 2_499])
    np.testing.assert_array_equal(source.take(rows, 1_000), vectors[rows])
    assert VectorFile(tmp_path / "images.npy", rows=2_000).read(1_900, 3_000).shape == (100, 32)
    np.save(tmp_path / "wrong.npy", vectors.astype(np.float64))
    with pytest.raises(ValueError, match="2-d float32"):
        VectorFile(tmp_path / "wrong.npy")


def test_unknown_codes_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="SQ8, SQ4, SQfp16, Flat or PQ<m>"):
        VectorIndexSettings(codes="HNSW32")


def test_exact_top_is_the_sorted_best_scores() -> None:
    vectors = clustered(1_000)
    rows, scores = ExactVectors(vectors).top(vectors[7], 5)
    assert rows[0] == 7 and np.all(np.diff(scores) <= 0)
    np.testing.assert_allclose(scores, np.sort(vectors @ vectors[7])[::-1][:5], rtol=1e-6)


def test_every_list_probed_with_flat_codes_is_exact_search(tmp_path: Path) -> None:
    vectors, queries = clustered(5_000), clustered(50, seed=1)
    folder = saved(tmp_path, vectors, queries)
    settings = VectorIndexSettings(approximate_above=10, codes="Flat", lists=16, probes=16, train_rows=1_000, chunk_rows=1_000)
    plan = write_approximate(folder, len(vectors), settings)
    approximate, exact = open_vectors(folder, "images", plan), ExactVectors(vectors)
    assert isinstance(approximate, ApproximateVectors)
    for query in queries:
        rows, scores = approximate.top(query, 10)
        want_rows, want_scores = exact.top(query, 10)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-6)  # exact re-scoring: the scores users see are exact


def test_the_default_plan_keeps_recall_at_10_above_095_on_clustered_vectors(tmp_path: Path) -> None:
    vectors, queries = clustered(40_000), clustered(200, seed=1)
    folder = saved(tmp_path, vectors)
    settings = VectorIndexSettings(approximate_above=10, train_rows=20_000, chunk_rows=5_000)
    plan = write_approximate(folder, len(vectors), settings)
    assert plan["lists"] == 256 and plan["probes"] == 64
    assert recall_at_10(open_vectors(folder, "images", plan), ExactVectors(vectors), queries) >= 0.95


def test_building_a_chunk_at_a_time_gives_the_same_index(tmp_path: Path) -> None:
    vectors = clustered(6_000)
    saved(tmp_path, vectors)
    plan = index_plan(len(vectors), VectorIndexSettings(approximate_above=10))
    build_approximate(tmp_path / "images.npy", tmp_path / "chunked.faiss", plan, VectorIndexSettings(train_rows=2_000, chunk_rows=1_000))
    build_approximate(tmp_path / "images.npy", tmp_path / "whole.faiss", plan, VectorIndexSettings(train_rows=2_000, chunk_rows=100_000))
    assert (tmp_path / "chunked.faiss").read_bytes() == (tmp_path / "whole.faiss").read_bytes()


def test_a_grown_index_is_extended_with_its_recorded_plan_and_finds_the_new_rows(tmp_path: Path) -> None:
    settings = VectorIndexSettings(approximate_above=10, train_rows=1_000, chunk_rows=1_000)
    old, new = clustered(3_000), clustered(500, seed=2)
    previous = saved(tmp_path / "previous", old)
    plan = write_approximate(previous, len(old), settings)
    (previous / "index.json").write_text(f'{{"approximate": {__import__("json").dumps(plan)}}}')
    grown = saved(tmp_path / "grown", np.concatenate([old, new]))
    bigger = VectorIndexSettings(approximate_above=10, train_rows=1_000, chunk_rows=1_000, lists=64)
    assert write_approximate(grown, 3_500, bigger, previous) == plan  # extended, not retrained with 64 lists
    index = faiss.read_index(str(grown / "images.faiss"))
    assert index.ntotal == 3_500 and faiss.extract_index_ivf(index).nlist == plan["lists"]
    search = open_vectors(grown, "images", plan)
    assert [int(search.top(row, 1)[0][0]) for row in new[:20]] == list(range(3_000, 3_020))


def test_vector_writer_writes_the_rows_it_was_given_a_block_at_a_time(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(2_345, 8)).astype(np.float32)
    writer = VectorWriter(tmp_path / "v.npy", 8)
    for start in range(0, len(rows), 1_000):
        writer.write(rows[start:start + 1_000])
    writer.write(np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="rows of 8 values"):
        writer.write(np.zeros((3, 7), np.float32))
    writer.close()
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), rows)
    np.testing.assert_array_equal(VectorFile(tmp_path / "v.npy").read(1_000, 1_010), rows[1_000:1_010])
