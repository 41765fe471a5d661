"""Labeling throughput of the registered champion classifier on real titles (`make bench-labeling`).

Run after `make run` (or any train_classifier stage): it loads `models:/<classifier>@champion`
from the project's registry, whatever candidate won, warms it on 100 titles (lazy imports, the
first tokenizer call), then times `predict` on `--rows` real titles from the cleaned listing,
drawn with replacement. Each repeat is one call on the whole frame, as the labeling stage makes;
the first repeat pays for fresh memory, the later ones show the steady rate. The baseline is the
target: 20,000 titles/s on 2 cores, with margin (>= 30,000 on a quiet machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

TARGET = 20_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="a model URI (default: the classifier champion)")
    parser.add_argument("override", nargs="*", help="params overrides, section.key=value")
    args = parser.parse_args(argv)

    import mlflow

    from tasks.platform.settings import load_settings
    from tasks.platform.tracking import client, ensure_tracking_reachable

    settings = load_settings(Path("params.yaml"), args.override)
    listing_path = settings.paths.clean_listing
    if not listing_path.is_file():
        print(f"{listing_path} not found: run `make run` (or the validate stage) first")
        return 2
    ensure_tracking_reachable()
    client()
    uri = args.model or f"models:/{settings.mlflow.classifier_model_name}@{settings.mlflow.champion_alias}"
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as error:  # noqa: BLE001  any failure to load is reported, not a traceback
        print(f"{uri} cannot be loaded ({error}); run the train_classifier stage first")
        return 2
    listing = pd.read_parquet(listing_path, columns=["title", "author"])
    titles = listing.sample(args.rows, replace=True, random_state=1).reset_index(drop=True)
    model.predict(titles.head(100))
    rates = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        model.predict(titles)
        rates.append(len(titles) / (time.perf_counter() - started))
    name = getattr(model.unwrap_python_model().pipeline, "name", "?")
    print(f"labeling benchmark: {args.rows:,} real titles (drawn from {len(listing):,}), {os.cpu_count()} cores, "
          f"{uri} ({name})")
    print(f"  first call   {rates[0]:9,.0f} titles/s   ratio to the 20,000 target {rates[0] / TARGET:.2f}")
    print(f"  median       {statistics.median(rates):9,.0f} titles/s   ratio {statistics.median(rates) / TARGET:.2f}"
          f"   (of {args.repeats} calls: {', '.join(f'{r:,.0f}' for r in rates)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
