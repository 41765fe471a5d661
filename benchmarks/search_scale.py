"""The cover index at 100 k, 1 M and 10 M covers: exact scan against the FAISS index (`make bench-search-scale`).

Vectors are drawn around real cover embeddings: each is a real cover's image embedding from an
index the pipeline built (`--real-index`), plus Gaussian noise with the real embeddings' own
covariance (scaled by `--noise`), re-normalised; so they keep the real embeddings' cone, spread
and clusters. Queries are the real index's caption embeddings: title queries, as users make them.
The sizes are prefixes of one generated file (rows are drawn independently, so a prefix is a sample).

Printed per size: the exact scan's query latency (the baseline), the approximate index's build time
and peak RSS (in its own process), its query latency p50/p95 (one query at a time, as the engine
asks; the first pass just after opening, then the same queries again), recall@10 against the exact
top 10, the serving process's RSS (all of it, and the part not backed by files: the index's codes
and the vectors are memory-mapped) and the index's size on disk.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.memory import memory_status, peak_rss_gib
from tasks.platform.sections import VectorIndexSettings
from tasks.platform.settings import load_settings
from tasks.search.vectors import ExactVectors, build_approximate, index_plan, open_vectors

CHUNK = 200_000


def generate(real: np.ndarray, rows: int, path: Path, noise: float, seed: int = 0) -> None:
    """`rows` vectors around the real ones, written a chunk at a time into a .npy file."""
    covariance = np.cov(real.T) + 1e-6 * np.eye(real.shape[1])
    spread = np.linalg.cholesky(covariance).astype(np.float32)
    out = np.lib.format.open_memmap(path, "w+", np.float32, (rows, real.shape[1]))
    for n, start in enumerate(tqdm(range(0, rows, CHUNK), desc=f"generate {rows:,}", unit="chunk")):
        rng = np.random.default_rng([seed, n])
        size = min(CHUNK, rows - start)
        drawn = real[rng.integers(0, len(real), size)] + noise * (rng.standard_normal((size, real.shape[1]), np.float32) @ spread.T)
        out[start:start + size] = drawn / np.linalg.norm(drawn, axis=1, keepdims=True)
    out.flush()


def exact_top10(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Every query's exact top 10, scanning the rows a chunk at a time (many queries at once)."""
    best_scores = np.full((len(queries), 10), -np.inf, np.float32)
    best_rows = np.zeros((len(queries), 10), np.int64)
    for start in range(0, len(vectors), 1_000_000):
        scores = queries @ np.asarray(vectors[start:start + 1_000_000]).T
        top = np.argpartition(-scores, 9, axis=1)[:, :10]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], 1)
        merged_rows = np.concatenate([best_rows, top + start], 1)
        order = np.argsort(-merged_scores, axis=1)[:, :10]
        best_scores, best_rows = np.take_along_axis(merged_scores, order, 1), np.take_along_axis(merged_rows, order, 1)
    return best_rows


def rss_gib() -> tuple[float, float]:
    """(resident, resident and not backed by a file) of this process, GiB."""
    status = memory_status()
    return status["VmRSS"], status["RssAnon"]


def build_phase(vectors_file: str, rows: int, index_file: str, settings: VectorIndexSettings) -> dict[str, float]:
    """Runs in its own process, so its peak RSS is the build's alone."""
    started = time.perf_counter()
    build_approximate(Path(vectors_file), Path(index_file), index_plan(rows, settings), settings, rows=rows)
    return {"seconds": time.perf_counter() - started, "peak_rss": peak_rss_gib()}


def query_phase(folder: str, plan: dict[str, object], queries: np.ndarray, truth: np.ndarray) -> dict[str, object]:
    """Runs in its own process: the RSS a search page holding only this index would have.

    The queries run twice: first just after the index is opened (its lists are paged in as they are
    probed), then again, as a page that has served a while would answer.
    """
    approximate = open_vectors(Path(folder), "images", plan)
    passes: list[list[float]] = []
    for _ in range(2):
        seconds, recall = [], []
        for query, want in zip(queries, truth):
            started = time.perf_counter()
            found, _ = approximate.top(query, 10)
            seconds.append(time.perf_counter() - started)
            recall.append(len(set(found.tolist()) & set(want.tolist())) / 10)
        passes.append(seconds)
    resident, anonymous = rss_gib()
    return {"first": passes[0], "latency": passes[1], "recall": float(np.mean(recall)), "rss": resident, "anon": anonymous}


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(1000 * s for s in seconds)
    return statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]


def exact_latency(vectors: np.ndarray, queries: np.ndarray) -> list[float]:
    exact, seconds = ExactVectors(vectors), []
    for query in queries:
        started = time.perf_counter()
        exact.top(query, 10)
        seconds.append(time.perf_counter() - started)
    return seconds


def measure(work: Path, vectors_file: Path, rows: int, queries: np.ndarray, settings: VectorIndexSettings,
            exact_queries: int) -> dict[str, object]:
    folder = work / f"index-{rows}"
    folder.mkdir(exist_ok=True)
    vectors = np.load(vectors_file, mmap_mode="r")[:rows]
    (folder / "images.npy").unlink(missing_ok=True)
    (folder / "images.npy").symlink_to(vectors_file)
    truth = exact_top10(vectors, queries)
    exact = exact_latency(vectors, queries[:exact_queries])
    plan = index_plan(rows, settings)
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1, maxtasksperchild=1) as pool:
        built = pool.apply(build_phase, (str(vectors_file), rows, str(folder / "images.faiss"), settings))
    with spawn.Pool(1, maxtasksperchild=1) as pool:
        served = pool.apply(query_phase, (str(folder), plan, queries, truth))
    size = (folder / "images.faiss").stat().st_size / 2**30
    (folder / "images.faiss").unlink()
    return {"rows": rows, "plan": plan, "exact": percentiles(exact), "build": built, "served": served,
            "first": percentiles(served["first"]), "approximate": percentiles(served["latency"]), "size": size}


def report(result: dict[str, object]) -> str:
    exact_p50, exact_p95 = result["exact"]
    p50, p95 = result["approximate"]
    first_p50, first_p95 = result["first"]
    served, built, plan = result["served"], result["build"], result["plan"]
    return (f"| {result['rows']:>10,} | {plan['factory']} probes {plan['probes']} rerank {plan['rerank']} | "
            f"{exact_p50:7.1f} / {exact_p95:7.1f} | {first_p50:5.2f} / {first_p95:5.2f} | {p50:5.2f} / {p95:5.2f} | "
            f"{exact_p50 / p50:6.0f}x | "
            f"{served['recall']:.3f} | {built['seconds']:6.0f} s, {built['peak_rss']:.2f} GiB | "
            f"{served['rss']:.2f} ({served['anon']:.2f}) GiB | {result['size']:.2f} GiB |")


def resemblance(real_images: np.ndarray, real_captions: np.ndarray, generated: np.ndarray) -> str:
    """The best cosine of 200 real title queries among the real covers and among as many generated ones."""
    queries = real_captions[:200]
    real_best = (queries @ real_images.T).max(axis=1)
    generated_best = (queries @ np.asarray(generated[:len(real_images)]).T).max(axis=1)
    return (f"best cosine of 200 real title queries: real covers median {np.median(real_best):.3f}, "
            f"generated (as many) median {np.median(generated_best):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--real-index", type=Path, help="an index folder the pipeline built (default: paths.cover_index)")
    parser.add_argument("--work", type=Path, help="where the generated vectors go (10 M x 256 float32 is 10 GB)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=20, help="single queries timed on the exact scan")
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("overrides", nargs="*", help="vector_index.<key>=<value> overrides (e.g. vector_index.probes=256)")
    args = parser.parse_args()
    settings = load_settings(overrides=args.overrides)
    real_index = args.real_index or settings.paths.cover_index
    if not (real_index / "images.npy").is_file():
        raise SystemExit(f"{real_index}: no cover index; run `make run` first (or pass --real-index)")
    real_images, real_captions = np.load(real_index / "images.npy"), np.load(real_index / "captions.npy")
    queries = real_captions[np.random.default_rng(1).permutation(len(real_captions))[:args.queries]]
    sizes = sorted(int(size) for size in args.sizes.split(","))
    vector_settings = settings.vector_index.model_copy(update={"approximate_above": 1})
    with tempfile.TemporaryDirectory(prefix="bench-search-scale-", dir=args.work) as folder:
        work = Path(folder)
        generate(real_images, sizes[-1], work / "vectors.npy", args.noise)
        print(f"vectors: {len(real_images):,} real cover embeddings from {real_index} (d = {real_images.shape[1]}) "
              f"+ noise {args.noise} x their covariance; {len(queries)} real title queries, k = 10")
        print(resemblance(real_images, real_captions, np.load(work / "vectors.npy", mmap_mode="r")))
        print("| covers | FAISS index | exact p50 / p95 ms | FAISS first pass p50 / p95 ms | FAISS p50 / p95 ms | "
              "speed-up p50 | recall@10 | build (time, peak RSS) | serving RSS (not file-backed) | index file |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for rows in sizes:
            print(report(measure(work, work / "vectors.npy", rows, queries, vector_settings, args.exact_queries)), flush=True)


if __name__ == "__main__":
    main()
