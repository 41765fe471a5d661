"""The data stages on the engine: throughput with 1 and 2 Dask workers against one process (`make bench-scale`).

Covers are generated (small JPEGs with noise, `--cover-side` px on the short side) and listed in a
generic covers.csv, so the run needs no data beside the project. Per stage and per engine it prints
the throughput, the per-cover cost it implies (seconds x workers / covers: the work one worker does
per cover, with the engine's per-task cost spread over its chunk) and the peak RSS of every worker
process (VmHWM, reset before each stage) and of this driver process. The engine runs on a local
cluster started once per worker count, as `engine.cluster_address` would reach a user's; its start
time is printed on its own line.

Stages: `validate covers` (validate_covers: every cover decoded once, the GX suite), `shard covers`
(write_shards at `--shard-side` px), `embed covers` (CoverEmbedder with the towers CLIP, image
and caption towers plus heads, on the first `--embed-covers` covers) and, with `--listing-rows`,
`validate listing` (a generated book32-style listing validated in parts of `--chunk-rows` rows and
its clean Parquet and quarantine written; `--listing-whole` also measures it held whole in memory,
the path a listing of one part takes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from prefect import flow
from tqdm import tqdm

from benchmarks.memory import peak_rss_gib, reset_peak_rss
from tasks.platform.sections import EngineSettings

log = logging.getLogger(__name__)


def _write_covers(folder: str, first: int, count: int, side: int) -> None:
    rng = np.random.default_rng(first)
    for n in range(first, first + count):
        base = rng.integers(0, 256, 3)
        pixels = np.clip(base + rng.normal(0, 40, (side * 3 // 2, side, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(f"{folder}/{n}.jpg", quality=85)


def generate_covers(folder: Path, covers: int, side: int) -> Path:
    """`covers` JPEGs and their generic covers.csv in `folder` (kept between runs: generation is not measured)."""
    csv = folder / "covers.csv"
    if csv.is_file() and len(pd.read_csv(csv, usecols=["image"])) == covers:
        return csv
    (folder / "img").mkdir(parents=True, exist_ok=True)
    step = 5_000
    with ProcessPoolExecutor(2) as pool:
        jobs = [pool.submit(_write_covers, str(folder / "img"), first, min(step, covers - first), side) for first in range(0, covers, step)]
        for job in tqdm(jobs, desc=f"generate {covers:,} covers", unit="chunk"):
            job.result()
    titles = [f"Generated Book {n}" for n in range(covers)]
    pd.DataFrame({"title": titles, "author": "A. Writer", "image": [f"img/{n}.jpg" for n in range(covers)]}).to_csv(csv, index=False)
    return csv


def measure(stage: Callable[[EngineSettings], int], engine: EngineSettings, client: object | None) -> dict[str, object]:
    """Run one stage; its seconds, items, and the peak RSS of this process and of each worker."""
    reset_peak_rss()
    if client is not None:
        client.run(reset_peak_rss)
    started = time.perf_counter()
    items = stage(engine)
    seconds = time.perf_counter() - started
    workers = sorted(client.run(peak_rss_gib).values()) if client is not None else []
    return {"items": items, "seconds": seconds, "driver_peak_gib": peak_rss_gib(), "worker_peak_gib": workers}


def generate_listing(folder: Path, rows: int) -> Path:
    """A book32-style listing of `rows` generated rows in `folder` (kept between runs: generation is not measured)."""
    from tasks.inputs.synthetic import generate_dataset

    marker = folder / f"rows-{rows}"
    if not marker.is_file():
        generate_dataset(folder, listing_rows=rows, cover_books=0)
        marker.touch()
    return next(folder.glob("amazon-books/*.csv"))


def listing_stage(listing: Path, work: Path) -> Callable[[EngineSettings], int]:
    from tasks.inputs.outcomes import write_clean_listing, write_quarantine
    from tasks.inputs.validation import scratch_folder, validate_listing_files
    from tasks.platform.settings import ValidateSettings

    def validate(engine: EngineSettings) -> int:
        with scratch_folder(work) as parts:
            outcome = validate_listing_files([listing], "auto", ValidateSettings(), engine, None, parts)
            write_clean_listing(outcome, work / "listing.parquet")
            write_quarantine([outcome], work / "quarantine.parquet")
        log.info("validate listing: %s", outcome.summary())
        assert outcome.rows_kept + outcome.rows_quarantined == outcome.rows_in > 0
        return outcome.rows_in

    return validate


def stages(csv: Path, work: Path, shard_side: int, embed_covers: int) -> dict[str, Callable[[EngineSettings], int]]:
    import torch

    from tasks.clip.model import initial_bundle, load_saved_clip, save_bundle
    from tasks.clip.shards import write_shards
    from tasks.inputs.readers import read_covers
    from tasks.inputs.validation import validate_covers
    from tasks.platform.settings import ClipSettings, ValidateSettings
    from tasks.search.index import CoverEmbedder

    frame, _ = read_covers(csv, "generic")
    labeled = pd.DataFrame({"book_id": frame["book_id"], "caption": frame["title"],
                            "image_path": [str(Path(r) / i) for r, i in zip(frame["image_root"], frame["image_ref"])]})
    books = labeled.head(embed_covers).assign(title=lambda f: f["caption"], author="A. Writer", genre="History", category="")
    bundle = None
    if embed_covers:  # the towers CLIP (image and caption towers, heads) only when the embed stage runs
        save_bundle(initial_bundle(ClipSettings(model="towers", device="cpu"), None, None, torch.device("cpu")), work / "clip")
        bundle = load_saved_clip(work / "clip", "cpu")

    def validate(engine: EngineSettings) -> int:
        outcome = validate_covers(frame, "generic", ValidateSettings(), engine)
        assert len(outcome.kept) == len(frame), outcome.by_reason
        return len(frame)

    def shard(engine: EngineSettings) -> int:
        manifest = write_shards(labeled, work / "shards", shard_side, engine)
        assert manifest["written"] == len(labeled)
        return len(labeled)

    def embed(engine: EngineSettings) -> int:
        images, _, ok = CoverEmbedder(bundle, work / "clip", "cpu", engine).embed(books, books["caption"].tolist())
        assert ok.all() and len(images) == len(books)
        return len(books)

    return {"validate covers": validate, "shard covers": shard, **({"embed covers": embed} if embed_covers else {})}


def local_cluster(workers: int) -> tuple[object, object, float]:
    """A local cluster as a user's would be, its client, and the seconds until both workers answered."""
    from distributed import Client, LocalCluster

    from tasks.platform.engine import glibc_malloc_defaults, local_cluster_options

    started = time.perf_counter()
    with glibc_malloc_defaults():
        cluster = LocalCluster(**local_cluster_options(workers))  # what the engine starts when it has no address
    client = Client(cluster)
    client.wait_for_workers(workers)
    return cluster, client, time.perf_counter() - started


@flow(name="bench-scale", log_prints=False)
def run(args: argparse.Namespace) -> list[dict[str, object]]:
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scale-"))
    covers = [s for s in ("validate covers", "shard covers", "embed covers") if not args.stages or s in args.stages]
    measured: dict[str, Callable[[EngineSettings], int]] = {}
    if args.listing_rows:  # first: its workers' peaks then start from fresh workers, not from the embed stage's CLIP
        measured["validate listing"] = listing_stage(generate_listing(work / f"listing-{args.listing_rows}", args.listing_rows), work)
    if covers:
        csv = generate_covers(work / f"covers-{args.covers}", args.covers, args.cover_side)
        measured.update(stages(csv, work, args.shard_side, min(args.embed_covers, args.covers) if "embed covers" in covers else 0))
    results = []
    if args.listing_rows and args.listing_whole:
        whole = EngineSettings(kind="none", chunk_rows=args.listing_rows)
        results.append({"engine": "in process, whole", "stage": "validate listing", "workers": 1,
                        **measure(measured["validate listing"], whole, None)})
        print(json.dumps(results[-1]), flush=True)
    for label, workers in [("in process", 0), *[(f"dask, {w} worker{'s' if w > 1 else ''}", w) for w in args.workers]]:
        cluster = client = None
        engine = EngineSettings(kind="none", chunk_covers=args.chunk, chunk_rows=args.chunk_rows)
        if workers:
            cluster, client, start_seconds = local_cluster(workers)
            engine = EngineSettings(cluster_address=cluster.scheduler_address, chunk_covers=args.chunk, chunk_rows=args.chunk_rows)
            results.append({"engine": label, "stage": "cluster start", "seconds": start_seconds})
        try:
            for name, stage in measured.items():
                if args.stages and name not in args.stages:
                    continue
                figures = measure(stage, engine, client)
                results.append({"engine": label, "stage": name, "workers": max(workers, 1), **figures})
                print(json.dumps(results[-1]), flush=True)
        finally:
            if client is not None:
                client.close()
                cluster.close()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return results


def table(results: list[dict[str, object]]) -> str:
    lines = ["| stage | engine | items | seconds | items/s | per item per worker (ms) | worker peak RSS (GiB) | driver peak RSS (GiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["stage"] == "cluster start":
            lines.append(f"| cluster start | {r['engine']} | | {r['seconds']:.1f} | | | | |")
            continue
        rate = r["items"] / r["seconds"]
        peaks = ", ".join(f"{p:.2f}" for p in r["worker_peak_gib"]) or "-"
        lines.append(f"| {r['stage']} | {r['engine']} | {r['items']:,} | {r['seconds']:.1f} | {rate:,.0f} | "
                     f"{1000 * r['seconds'] * r['workers'] / r['items']:.2f} | {peaks} | {r['driver_peak_gib']:.2f} |")
    return "\n".join(lines)


PROJECTED_COVERS = (10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
PROJECTED_WORKERS = (2, 16, 128)


def projection(results: list[dict[str, object]]) -> str:
    """Time per stage at larger sizes, from the per-cover cost one worker measured here (one worker per core,
    as a cluster gives it; with 2 workers this machine's 2 cores also run the driver, scheduler and Prefect server).

    A projection, not a measurement: it assumes that cost holds per worker on other machines, that the
    shared filesystem keeps up, and it leaves out the cluster's start and the driver's serial share.
    The listing is left out: most of its time is the driver's serial share (reading the CSV, judging
    uniqueness), which more workers do not shorten.
    """
    runs = [r for r in results if r["stage"] not in ("cluster start", "validate listing") and not r["engine"].startswith("in process")]
    single = [r for r in runs if r["workers"] == 1]
    measured = {r["stage"]: r for r in (single or runs)}
    head = " | ".join(f"{n:,} covers" for n in PROJECTED_COVERS)
    lines = [f"| stage (per cover per worker) | workers | {head} |", "|---|---|" + "---|" * len(PROJECTED_COVERS)]
    for stage, r in measured.items():
        per_cover = r["seconds"] * r["workers"] / r["items"]
        for workers in PROJECTED_WORKERS:
            cells = " | ".join(_duration(n * per_cover / workers) for n in PROJECTED_COVERS)
            lines.append(f"| {stage} ({1000 * per_cover:.2f} ms) | {workers} | {cells} |")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--covers", type=int, default=20_000)
    parser.add_argument("--embed-covers", type=int, default=4_000,
                        help="covers the embed stage takes (the towers CLIP on CPU); at least 2 chunks, or it stays in process")
    parser.add_argument("--cover-side", type=int, default=120, help="short side of the generated covers, px")
    parser.add_argument("--shard-side", type=int, default=160, help="shard resolution, px (160: the towers CLIP's)")
    parser.add_argument("--workers", default="1,2", help="Dask worker counts to measure, beside one process")
    parser.add_argument("--chunk", type=int, default=EngineSettings().chunk_covers, help="covers per task (engine.chunk_covers)")
    parser.add_argument("--stages", default="", help="comma-separated subset of: validate covers, shard covers, embed covers, "
                                                      "validate listing (empty: all)")
    parser.add_argument("--listing-rows", type=int, default=0, help="rows of the generated listing (0: no listing stage)")
    parser.add_argument("--chunk-rows", type=int, default=EngineSettings().chunk_rows, help="listing rows per part (engine.chunk_rows)")
    parser.add_argument("--listing-whole", action="store_true", help="also validate the listing whole, in memory (the one-part path)")
    parser.add_argument("--work", default="", help="keep generated covers and outputs here (default: a temporary folder)")
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",") if w]
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    os.environ.setdefault("TQDM_MININTERVAL", "5")
    results = run(args)
    print(table(results))
    print("\nprojection from the per-cover costs above (not measured):")
    print(projection(results))


if __name__ == "__main__":
    main()
