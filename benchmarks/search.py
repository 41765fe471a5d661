"""Query latency of the cover search at 100,000 indexed covers, models already loaded (`make bench-search`).

Uses the project's own champion classifier (`models/classifier`) and CLIP (the cover index's, else
`models/clip`) from the last `make run`. The index holds the real cover embeddings when the
index_covers stage has run, padded with random unit vectors to 100,000 rows: ranking cost does
not depend on what the rows mean. Printed: per-query time by phase (p50 / p95 over the queries),
and the search step at ViT-B/32's 512 dimensions, with a full argsort as the baseline for argpartition.
`--threads 2` shows why the CLI and the page run torch on one thread: a single short query cannot
use two, and waking the second costs tens of milliseconds at p95.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from tasks.clip.model import embed_texts
from tasks.platform.settings import load_settings
from tasks.search.engine import CoverSearch

QUERIES = ["Rick Steves Paris 2016", "The Joy of Cooking", "A Brief History of Time", "Pride and Prejudice",
           "Learning Python", "The Very Hungry Caterpillar", "Harry Potter and the Sorcerer's Stone", "Cosmos",
           "The Art of War", "Gardening for Beginners", "Marathon Training Guide", "The Bible Study Handbook"]


def build_index(folder: Path, clip_folder: Path, real_index: Path | None, rows: int, seed: int) -> None:
    shutil.copytree(clip_folder, folder / "clip")
    dim = json.loads((clip_folder / "config.json").read_text())["projection_dim"]
    rng = np.random.default_rng(seed)
    if real_index is not None:
        images, captions = np.load(real_index / "images.npy"), np.load(real_index / "captions.npy")
        books = pd.read_parquet(real_index / "books.parquet")
    else:
        images = captions = np.zeros((0, dim), np.float32)
        books = pd.DataFrame({"book_id": [], "title": [], "author": [], "genre": [], "image_path": []})
    padding = rows - len(images)
    random = rng.standard_normal((padding, dim)).astype(np.float32)
    random /= np.linalg.norm(random, axis=1, keepdims=True)
    np.save(folder / "images.npy", np.concatenate([images, random]))
    np.save(folder / "captions.npy", np.concatenate([captions, random]))
    filler = pd.DataFrame({"book_id": [f"pad{i}" for i in range(padding)], "title": "padding", "author": "",
                           "genre": "Travel", "image_path": ""})
    pd.concat([books, filler], ignore_index=True).to_parquet(folder / "books.parquet", index=False)
    (folder / "index.json").write_text(json.dumps({"caption_template": "{title} by {author}, {genre}", "covers": rows}))


def percentiles(seconds: list[float]) -> str:
    ms = sorted(1000 * s for s in seconds)
    return f"p50 {statistics.median(ms):6.2f} ms   p95 {ms[int(0.95 * (len(ms) - 1))]:6.2f} ms"


def time_queries(search: CoverSearch, repeats: int) -> dict[str, list[float]]:
    phases: dict[str, list[float]] = {"classify": [], "embed title": [], "rank 100k": [], "total": []}
    for _ in range(repeats):
        for title in QUERIES:
            started = time.perf_counter()
            predicted = search.classifier.predict(pd.DataFrame({"title": [title], "author": [""]}))
            classified = time.perf_counter()
            vector = embed_texts(search.bundle, [f"{title} by unknown author, {predicted['genre'].iloc[0]}"])[0]
            embedded = time.perf_counter()
            search._top(search.images, vector, 5)
            ranked = time.perf_counter()
            for name, seconds in zip(phases, (classified - started, embedded - classified, ranked - embedded, ranked - started)):
                phases[name].append(seconds)
    end_to_end = []
    for title in QUERIES * repeats:  # the public call, as the CLI and the page make it
        started = time.perf_counter()
        search.by_title(title, k=5)
        end_to_end.append(time.perf_counter() - started)
    phases["by_title (public call)"] = end_to_end
    return phases


def rank_at_512(rows: int, repeats: int, seed: int) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((rows, 512)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    partition, full_sort = [], []
    for _ in range(repeats * len(QUERIES)):
        query = rng.standard_normal(512).astype(np.float32)
        started = time.perf_counter()
        scores = matrix @ query
        best = np.argpartition(-scores, 4)[:5]
        best[np.argsort(-scores[best])]
        partition.append(time.perf_counter() - started)
        started = time.perf_counter()
        np.argsort(-(matrix @ query))[:5]
        full_sort.append(time.perf_counter() - started)
    return partition, full_sort


def vit_b32_title_embedding(repeats: int) -> list[float] | None:
    """Query embedding with the exact ViT-B/32 text tower (random weights: the cost is the same)."""
    folder = Path("../shared/models/clip-vit-base-patch32-noweights")
    if not folder.is_dir():
        return None
    from tasks.clip.model import load_source
    from tasks.platform.settings import ClipSettings

    bundle = load_source(str(folder), ClipSettings(model=str(folder)), offline=True, seed=0, device=torch.device("cpu"))
    embed_texts(bundle, [QUERIES[0]])
    seconds = []
    for title in QUERIES * repeats:
        started = time.perf_counter()
        embed_texts(bundle, [f"{title} by unknown author, Travel"])
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 1 is what `bookcovers` uses (see flows/bookcovers.py)")
    args = parser.parse_args()
    settings = load_settings()
    real_index = settings.paths.cover_index if (settings.paths.cover_index / "index.json").is_file() else None
    clip_folder = real_index / "clip" if real_index else settings.paths.clip_dir
    if not (settings.paths.classifier_dir / "model").is_dir() or not (clip_folder / "config.json").is_file():
        raise SystemExit("run `make run` first: the benchmark uses the champion classifier and the CLIP it produces")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
        build_index(Path(folder), clip_folder, real_index, args.rows, seed=0)
        classifier = mlflow.pyfunc.load_model(str(settings.paths.classifier_dir / "model"))
        search = CoverSearch(Path(folder), classifier, settings.evaluate.zero_shot_template, "cpu")
        search.by_title(QUERIES[0])  # warm-up: first calls allocate
        phases = time_queries(search, args.repeats)
        dim = search.images.matrix.shape[1]
    partition, full_sort = rank_at_512(args.rows, args.repeats, seed=1)
    print(f"cover search, {args.rows:,} indexed covers ({'real' if real_index else 'no real'} covers + random padding), "
          f"CLIP {clip_folder} (d = {dim}), {len(QUERIES) * args.repeats} queries, {args.threads} torch thread(s)")
    for name, seconds in phases.items():
        print(f"  {name:24s} {percentiles(seconds)}")
    calls = sorted(phases["by_title (public call)"])
    p50, p95 = statistics.median(calls) * 1000, calls[int(0.95 * (len(calls) - 1))] * 1000
    print(f"  target <= 50 ms per query: {'met' if p95 <= 50 else 'NOT met'} at p95 ({p95:.1f} ms; p50 {p50:.1f} ms, "
          f"{50 / p50:.1f}x headroom)")
    vit = vit_b32_title_embedding(args.repeats)
    if vit is not None:
        print(f"  embed title, ViT-B/32  {percentiles(vit)}   (the full-size text tower instead of the small one)")
    print(f"ranking alone at d = 512 (ViT-B/32), {args.rows:,} rows:")
    print(f"  matmul + argpartition    {percentiles(partition)}")
    print(f"  matmul + full argsort    {percentiles(full_sort)}   (baseline; "
          f"{statistics.median(full_sort) / statistics.median(partition):.1f}x slower)")


if __name__ == "__main__":
    main()
