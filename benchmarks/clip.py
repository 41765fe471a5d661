"""CLIP fine-tuning throughput, project path vs the common recipe, measured side by side (`make bench-clip`).

Two parts, both on the real Book Depository covers (../shared/data):

1. Preprocessing: the shard writer (the data engine: 2 Dask workers, straight into the shard file) against decoding
   with PIL + `CLIPImageProcessor` one cover at a time, in covers/s.
2. Training steps, end to end (data loading included), each variant in its own process so peak
   memory is its own:
   - `project`: batches gathered from the uint8 shards by DataLoader workers, pinned, copied
     asynchronously, normalised on the device; bf16 autocast and fused AdamW on CUDA; captions
     tokenized once and cut to the batch's longest; optional torch.compile.
   - `naive`: the recipe of the book-cover paper and transformers' run_clip.py: PIL decode and
     CLIPImageProcessor in the DataLoader, captions padded to the model's 77 tokens, fp32,
     `CLIPModel(..., return_loss=True)`, default AdamW.
   Printed: pairs/s, the speed-up, model FLOP utilisation and peak memory.

On a GPU the model is the exact ViT-B/32 (../shared/models/clip-vit-base-patch32-noweights, random
init) at batch 256, and MFU is against `--peak-tflops` (800: what an H100 reaches on bf16 matmuls),
at the nominal 44 GFLOP per pair of a 77-token step. Without a GPU the same comparison runs with
the pipeline's small CLIP and says so: a ViT-B/32 step at batch 256 takes minutes on 2 cores. CPU
MFU is against this machine's fp32 matmul rate measured in the same run, and peak memory is the
process's peak resident set (it counts the shard pages read through the memory map).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from tasks.clip.data import PairSet, Tokens, batch_loader
from tasks.clip.distributed import DistContext
from tasks.clip.loop import backward_step, loader_workers, to_device, training_engine
from tasks.clip.model import (
    ClipBundle,
    CLIPImageProcessor,
    clip_image_size,
    initial_bundle,
    load_cover,
    load_source,
    train_flops_per_pair,
)
from tasks.clip.sampling import random_batches
from tasks.clip.shards import IMAGES, write_shards
from tasks.platform.sections import EngineSettings
from tasks.platform.settings import ClipSettings

SHARED = Path(__file__).resolve().parents[2] / "shared"
COVERS_CSV = SHARED / "data" / "bookdepository-covers" / "book-covers.csv"
VIT_B32 = SHARED / "models" / "clip-vit-base-patch32-noweights"
VIT_B32_SIZE = 224


def real_covers(limit: int | None) -> pd.DataFrame:
    """(image_path, caption) of the first `limit` distinct covers (None: all), captioned like the pipeline's."""
    covers = pd.read_csv(COVERS_CSV, encoding="utf-8", on_bad_lines="skip")
    covers["image_path"] = [str(COVERS_CSV.parent / str(path).replace("dataset/", "book-covers/", 1)) for path in covers["img_paths"]]
    covers = covers[[Path(path).is_file() for path in covers["image_path"]]].drop_duplicates("image_path")
    covers["caption"] = covers["name"].astype(str) + " by " + covers["author"].fillna("unknown").astype(str) + ", " + covers["category"].astype(str)
    return covers[["image_path", "caption"]].head(limit).reset_index(drop=True)


def clip_settings(args: argparse.Namespace) -> ClipSettings:
    """The project's own defaults (its DataLoader workers included: up to 4 on a GPU, none on CPU)."""
    return ClipSettings(model=args.model, batch_size=args.batch_size, compile=args.compile, device="cuda" if args.device == "cuda" else "cpu")


def load_bundle(args: argparse.Namespace, captions: list[str]) -> ClipBundle:
    cfg, device = clip_settings(args), torch.device(args.device)
    if args.model == "small":
        return initial_bundle(cfg, captions, None, device)
    return load_source(args.model, cfg, offline=True, seed=0, device=device)


# ---------------------------------------------------------------- preprocessing


def measure_preprocessing(covers: pd.DataFrame, work: Path) -> dict[str, float]:
    """The shard writer on every real cover at ViT-B/32's 224 px (2 Dask workers) against PIL + CLIPImageProcessor one at a time.

    The first covers' shards are what the data-path and training runs read (they are a prefix).
    """
    manifest = write_shards(covers, work / f"shards-{VIT_B32_SIZE}", VIT_B32_SIZE, EngineSettings(local_workers=2))
    first = np.load(work / f"shards-{VIT_B32_SIZE}" / IMAGES, mmap_mode="r")[0]
    assert np.array_equal(first, load_cover(Path(covers["image_path"][0]), VIT_B32_SIZE)), "the shard differs from load_cover"
    processor = CLIPImageProcessor.from_pretrained(str(VIT_B32), local_files_only=True)
    paths = covers["image_path"].tolist()[:500]
    started = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            processor(images=image.convert("RGB"), return_tensors="pt")
    naive = len(paths) / (time.perf_counter() - started)
    return {"covers": len(covers), "image_size": VIT_B32_SIZE, "shard_covers_per_second": manifest["covers_per_second"],
            "naive_covers_per_second": naive, "speedup": manifest["covers_per_second"] / naive}


# ---------------------------------------------------------------- training variants


class NaiveCovers(torch.utils.data.Dataset):
    """One pair per item, decoded and processed in the DataLoader: the common recipe."""

    def __init__(self, covers: pd.DataFrame, bundle: ClipBundle) -> None:
        self.paths, self.captions, self.bundle = covers["image_path"].tolist(), covers["caption"].tolist(), bundle

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        with Image.open(self.paths[item]) as image:
            pixels = self.bundle.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        text = self.bundle.tokenizer(self.captions[item], padding="max_length", truncation=True,
                                     max_length=self.bundle.max_text_tokens, return_tensors="pt")
        return {"pixel_values": pixels, "input_ids": text["input_ids"][0], "attention_mask": text["attention_mask"][0]}


def naive_steps(bundle: ClipBundle, covers: pd.DataFrame, args: argparse.Namespace):
    model = bundle.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loader = torch.utils.data.DataLoader(NaiveCovers(covers, bundle), batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers)
    while True:
        for batch in loader:
            batch = {key: value.to(bundle.device) for key, value in batch.items()}
            loss = model(**batch, return_loss=True).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            yield loss


def project_steps(bundle: ClipBundle, covers: pd.DataFrame, shards: Path, args: argparse.Namespace):
    cfg, context = clip_settings(args), DistContext(0, 1, bundle.device)
    pairs = PairSet(np.load(shards / IMAGES, mmap_mode="r"), covers["caption"].tolist())
    tokens = Tokens.encode(bundle, pairs.captions)
    engine, workers = training_engine(bundle, cfg, context), loader_workers(cfg, context)
    optimizer = torch.optim.AdamW(bundle.model.parameters(), lr=1e-5, fused=bundle.device.type == "cuda")
    generator = np.random.default_rng(0)
    while True:
        loader = batch_loader(pairs, tokens, random_batches(len(pairs), args.batch_size, generator), workers, pin=bundle.device.type == "cuda")
        for batch in loader:
            loss = backward_step(engine, to_device(batch, bundle.device), 1, context)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            yield loss


def loader_only(bundle: ClipBundle, covers: pd.DataFrame, shards: Path, args: argparse.Namespace, variant: str):
    """Batches as the GPU would receive them, with no model: how many pairs/s each data path can feed."""
    if variant == "loader-naive":
        loader = torch.utils.data.DataLoader(NaiveCovers(covers, bundle), batch_size=args.batch_size, shuffle=True, drop_last=True,
                                             num_workers=args.workers)
    else:
        pairs = PairSet(np.load(shards / IMAGES, mmap_mode="r"), covers["caption"].tolist())
        loader = batch_loader(pairs, Tokens.encode(bundle, pairs.captions), random_batches(len(pairs), args.batch_size, np.random.default_rng(0)),
                              args.workers, pin=bundle.device.type == "cuda")
    while True:
        for batch in loader:
            yield to_device(batch, bundle.device)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(args: argparse.Namespace) -> dict[str, float]:
    """Time `args.steps` training steps after `args.warmup`, in this process."""
    torch.manual_seed(0)
    covers = pd.read_parquet(Path(args.work) / "covers.parquet")
    bundle = load_bundle(args, covers["caption"].tolist())
    shards = Path(args.work) / f"shards-{bundle.image_size}"
    if args.variant.startswith("loader"):
        steps = loader_only(bundle, covers, shards, args, args.variant)
    else:
        steps = naive_steps(bundle, covers, args) if args.variant == "naive" else project_steps(bundle, covers, shards, args)
    for _ in range(args.warmup):
        next(steps)
    synchronise(bundle.device)
    if bundle.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(bundle.device)
    started = time.perf_counter()
    for _ in range(args.steps):
        next(steps)
    synchronise(bundle.device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(bundle.device) if bundle.device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"pairs_per_second": args.steps * args.batch_size / seconds, "seconds": seconds, "peak_memory_bytes": float(peak),
            "flops_per_pair": train_flops_per_pair(bundle.model.config, nominal_tokens(bundle))}


def nominal_tokens(bundle: ClipBundle) -> int:
    """77 for ViT-B/32 (the issue's 44 GFLOP convention); the small model's own limit otherwise."""
    return min(77, bundle.model.config.text_config.max_position_embeddings)


def measure_in_subprocess(variant: str, args: argparse.Namespace, model: str | None = None) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.clip", "--variant", variant, "--work", args.work, "--model", model or args.model,
               "--device", args.device, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--workers", str(args.workers), *(["--compile"] if args.compile else [])]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"the {variant} variant failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def cpu_matmul_flops(seconds: float = 1.0) -> float:
    """This machine's fp32 matmul rate with torch's threads: the CPU MFU's denominator."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return count * 2 * 1024**3 / (time.perf_counter() - started)


def report(args: argparse.Namespace, preprocessing: dict[str, float], data_path: dict[str, dict[str, float]],
           results: dict[str, dict[str, float]], peak: float) -> str:
    project, naive = results["project"], results["naive"]
    lines = [f"device: {args.device_name}; batch {args.batch_size}; naive recipe with {args.workers} DataLoader workers",
             f"1. preprocessing {preprocessing['covers']} real covers at {preprocessing['image_size']} px: shard writer "
             f"{preprocessing['shard_covers_per_second']:,.0f} covers/s (2 Dask workers) vs PIL + CLIPImageProcessor "
             f"{preprocessing['naive_covers_per_second']:,.0f} covers/s (1 process): x{preprocessing['speedup']:.2f} (target: 1,500 covers/s)",
             f"2. data path alone at 224 px, ViT-B/32 tokenizer, {args.workers} workers each (what each can feed a GPU): shards "
             f"{data_path['project']['pairs_per_second']:,.0f} pairs/s vs PIL in the DataLoader {data_path['naive']['pairs_per_second']:,.0f} "
             f"pairs/s: x{data_path['project']['pairs_per_second'] / data_path['naive']['pairs_per_second']:.2f}",
             f"3. training end to end, {args.model_name}, {args.steps} timed steps after {args.warmup}:",
             f"{'variant':<10}{'pairs/s':>10}{'MFU':>9}{'peak memory':>14}",
             ]
    for name, result in (("naive", naive), ("project", project)):
        mfu = result["pairs_per_second"] * result["flops_per_pair"] / peak
        lines.append(f"{name:<10}{result['pairs_per_second']:>10,.1f}{mfu:>9.2%}{result['peak_memory_bytes'] / 2**30:>11.2f} GiB")
    lines.append(f"speed-up of the project path over the naive recipe: x{project['pairs_per_second'] / naive['pairs_per_second']:.2f}")
    lines.append(f"MFU is nominal: {project['flops_per_pair'] / 1e9:.2f} GFLOP per pair, a step at the model's full text length "
                 f"(the project path cuts captions to the batch's longest, so it does less work than that) against {peak / 1e12:.2f} TFLOP/s ({args.peak_source})")
    if args.device != "cuda":
        lines.append("GPU figures: not measured (no CUDA device here); run `make bench-clip` on a GPU machine for ViT-B/32 at batch 256")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--model", default=None, help="a CLIP folder, or small (default: ViT-B/32 on a GPU, small on CPU)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 30 on a GPU, 6 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5 on a GPU, 2 on CPU)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader processes of the naive recipe and of both data-path-only runs (default 8 on a GPU, 2 on CPU); "
                             "the project's training uses its own default")
    parser.add_argument("--covers", type=int, default=None, help="real covers used (default: enough for the steps, at most all)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the project variant")
    parser.add_argument("--peak-tflops", type=float, default=800.0, help="the GPU's bf16 matmul rate for MFU")
    parser.add_argument("--out", default="benchmarks/results/clip.json")
    parser.add_argument("--variant", choices=["project", "naive", "loader-project", "loader-naive"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    on_gpu = args.device == "cuda"
    args.model = args.model or (str(VIT_B32) if on_gpu else "small")
    args.steps = args.steps or (30 if on_gpu else 6)
    # torch.compile compiles again for each new caption width (rounded to 8) before settling: warm up longer.
    args.warmup = args.warmup if args.warmup is not None else ((20 if args.compile else 5) if on_gpu else 2)
    args.workers = args.workers if args.workers is not None else (min(8, os.cpu_count() or 1) if on_gpu else 2)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.variant:
        torch.set_num_threads(torch.get_num_threads())
        print(json.dumps(run_variant(args)))
        return
    if not COVERS_CSV.is_file():
        raise SystemExit(f"the real covers are not at {COVERS_CSV}; this benchmark needs ../shared/data")
    needed = (args.steps + args.warmup) * args.batch_size
    every_cover = real_covers(None)
    covers = every_cover.head(args.covers or max(needed, 4 * args.batch_size))
    with tempfile.TemporaryDirectory(prefix="bench-clip-") as work:
        args.work = work
        covers.to_parquet(Path(work) / "covers.parquet", index=False)
        preprocessing = measure_preprocessing(every_cover, Path(work))
        training_size = clip_image_size(clip_settings(args))
        if training_size != VIT_B32_SIZE:
            write_shards(covers, Path(work) / f"shards-{training_size}", training_size)
        data_path = {variant: measure_in_subprocess(f"loader-{variant}", args, str(VIT_B32)) for variant in ("naive", "project")}
        results = {variant: measure_in_subprocess(variant, args) for variant in ("naive", "project")}
    if args.device == "cuda":
        peak, args.peak_source = args.peak_tflops * 1e12, "--peak-tflops, bf16"
        args.device_name = torch.cuda.get_device_name()
    else:
        peak, args.peak_source = cpu_matmul_flops(), f"this CPU's fp32 matmul rate on {torch.get_num_threads()} threads, measured now"
        args.device_name = f"CPU, {os.cpu_count()} cores"
    args.model_name = "ViT-B/32 (random init)" if args.model == str(VIT_B32) else args.model
    print(report(args, preprocessing, data_path, results, peak))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": args.device_name, "model": args.model_name, "batch_size": args.batch_size,
                               "preprocessing": preprocessing, "data_path": data_path, "training": results, "peak_flops": peak},
                              indent=2) + "\n")


if __name__ == "__main__":
    main()
