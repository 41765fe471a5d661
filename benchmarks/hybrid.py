"""A hybrid title query's latency at 100 k and 1 M indexed covers (`make bench-hybrid`), warm, one thread.

The read texts are generated: each cover "prints" a title and an author drawn from the real listing's
titles when ../shared/data is there (else from the embedded data set's words), with the reader's
habits: upper case, spaces dropped between some words. The CLIP vectors are random unit rows
(ranking cost does not depend on what they mean), searched as the index searches them at that size:
an exact scan up to `vector_index.approximate_above` rows, FAISS lists above. Queries are titles of
indexed covers, typed in ordinary case. Printed per size: the time to open the text index (IDF
weights from the counts), its memory, and per query p50/p95 of the title's embedding by the cover
index's CLIP (after `make run`), the read-text scores, the CLIP proposals, and the whole query: embedding,
read-text scores and the fused ranking (`fused_candidates`, as the search runs it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from benchmarks.memory import memory_status
from tasks.platform.sections import HybridSettings, VectorIndexSettings
from tasks.platform.settings import load_settings
from tasks.reading.text_match import TextMatcher, ngram_counts
from tasks.search.hybrid import fused_candidates
from tasks.search.vectors import build_approximate, index_plan, open_vectors

CHUNK = 100_000


def title_pool(data_root: Path) -> list[str]:
    listing = data_root / "amazon-books" / "book30-listing-train-partial.csv"
    if listing.is_file():
        import pandas as pd

        frame = pd.read_csv(listing, header=None, encoding="latin-1", usecols=[3, 4]).fillna("")
        return (frame[3].astype(str) + " " + frame[4].astype(str)).tolist()
    from tasks.inputs.synthetic_words import VOCAB

    words = sorted({w for ws in VOCAB.values() for w in ws})
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, 5)) for _ in range(20_000)]


def read_like(text: str, rng: np.random.Generator) -> str:
    """Upper case, and about half the spaces dropped, as the reader prints covers' text."""
    return "".join(ch for ch in text.upper() if ch != " " or rng.random() < 0.5)


def text_counts(pool: list[str], rows: int, seed: int) -> tuple[sp.csr_matrix, list[int]]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(pool), rows)
    parts = [ngram_counts([read_like(pool[i], rng) for i in picks[start : start + CHUNK]]) for start in range(0, rows, CHUNK)]
    return sp.vstack(parts).tocsr(), picks.tolist()


def percentiles(seconds: list[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    return f"p50 {statistics.median(ms):6.2f} ms  p95 {ms[int(0.95 * (len(ms) - 1))]:6.2f} ms"


def measure(
    rows: int,
    pool: list[str],
    queries: int,
    dim: int,
    work: Path,
    settings: VectorIndexSettings,
    embedder: Callable[[list[str]], np.ndarray] | None,
    common_share: float,
    common_min: int,
) -> None:
    counts, picks = text_counts(pool, rows, seed=rows)
    started = time.perf_counter()
    matcher = TextMatcher.from_counts(counts, common_share, common_min)
    open_seconds = time.perf_counter() - started
    rng = np.random.default_rng(1)
    vectors = np.lib.format.open_memmap(work / "images.npy", "w+", np.float32, (rows, dim))
    for start in range(0, rows, CHUNK):
        block = rng.standard_normal((min(CHUNK, rows - start), dim)).astype(np.float32)
        vectors[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    vectors.flush()
    plan = index_plan(rows, settings)
    if plan:
        build_approximate(work / "images.npy", work / "images.faiss", plan, settings)
    clip = open_vectors(work, "images", plan)
    candidates = HybridSettings().candidates
    timings: dict[str, list[float]] = {"title embedding": [], "read-text scores": [], "CLIP proposals": [], "whole query": []}
    found = 0
    for n in range(queries + 5):
        row = int(rng.integers(0, rows))
        title, vector = pool[picks[row]], rng.standard_normal(dim).astype(np.float32)
        t0 = time.perf_counter()
        if embedder is not None:
            embedder([title])
        t1 = time.perf_counter()
        text = matcher.scores(title)
        t2 = time.perf_counter()
        ranked = fused_candidates(clip, vector, text, 0.8, 10, candidates)
        t3 = time.perf_counter()
        clip.top(vector, candidates)
        t4 = time.perf_counter()
        if n >= 5:  # the first few warm the caches
            timings["title embedding"].append(t1 - t0)
            timings["read-text scores"].append(t2 - t1)
            timings["CLIP proposals"].append(t4 - t3)
            timings["whole query"].append(t3 - t0)
            found += any(picks[r] == picks[row] for r, *_ in ranked)
    status = memory_status()
    print(
        f"{rows:>9,} covers ({'FAISS ' + str(plan['factory']) if plan else 'exact scan'}): "
        f"text index opened in {open_seconds:.1f} s, "
        f"{counts.nnz / rows:.0f} n-grams a cover, process RSS {status['VmRSS']:.2f} GiB"
    )
    for name, seconds in timings.items():
        print(f"  {name:22s} {percentiles(seconds)}")
    print(f"  the queried title's cover (or a same-titled one) in the fused top 10: {found}/{queries}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--common-share", type=float, default=None, help="default: hybrid.common_ngram_share")
    args = parser.parse_args(argv)
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    project = load_settings()
    args.common_share = project.hybrid.common_ngram_share if args.common_share is None else args.common_share
    clip_folder = project.paths.cover_index / "clip"
    embedder = None
    if clip_folder.is_dir():  # the index's own CLIP embeds each title, as the search does
        from functools import partial

        from tasks.clip.model import embed_texts, load_saved_clip

        embedder = partial(embed_texts, load_saved_clip(clip_folder, "cpu"))
    print(
        "title embedding: " + (f"the cover index CLIP in {clip_folder}" if embedder else "none (no cover index yet: not timed)")
    )
    pool = title_pool(args.data_root)
    print(
        f"{len(pool):,} titles to draw from; {args.queries} title queries per size, one thread; queries skip n-grams "
        f"in more than {args.common_share:g} of the covers"
    )
    settings = VectorIndexSettings()
    for rows in (int(size) for size in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-hybrid-") as folder:
            measure(
                rows,
                pool,
                args.queries,
                args.dim,
                Path(folder),
                settings,
                embedder,
                args.common_share,
                project.hybrid.common_ngram_min,
            )


if __name__ == "__main__":
    main()
