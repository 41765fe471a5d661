"""How fast the cover reader reads, and how well what it reads finds the book, per reader setting
(`make bench-reading`): the measurement behind the `reading` section's defaults.

Books are sampled from the Book Depository covers in ../shared/data (one cover per ISBN, seed 0).
For each setting, every cover is read on one thread in this process; printed: seconds a cover
(mean and p95), covers/s on one thread, the share of covers with no text, and title->cover and
cover->title recall@1/@10 by the character n-gram TF-IDF of tasks/reading/text_match.py (a title
queries the read texts; a read text queries the titles + authors), gallery = the sampled books.
The first setting is the reference: the reader's own defaults (short side scaled to 736, with the
angle classifier). Run nothing else CPU-heavy beside it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.platform.sections import ReadingSettings
from tasks.reading.reader import CoverReader
from tasks.reading.text_match import TextMatcher

# side:min|max[:cls][:batch<n>][:lines<n>]; the reference is the library's own defaults
DEFAULT_SETTINGS = (
    "736:min:cls:batch6:lines0,320:min:batch6:lines0,320:min:batch1:lines0,320:min:lines4,320:min:lines3,256:min:lines4"
)


def sampled_books(data_root: Path, books: int, seed: int) -> pd.DataFrame:
    folder = data_root / "bookdepository-covers"
    table = pd.read_csv(folder / "book-covers.csv").drop_duplicates("isbn").dropna(subset=["name", "img_paths"])
    table = table.sample(n=min(books, len(table)), random_state=seed).reset_index(drop=True)
    table["path"] = [folder / "book-covers" / p.split("/", 1)[1] for p in table["img_paths"]]
    table["author"] = table["author"].fillna("")
    return table


def parse_setting(text: str) -> ReadingSettings:
    side, rule, *flags = text.split(":")
    numbers = {flag.rstrip("0123456789"): int(flag[len(flag.rstrip("0123456789")) :]) for flag in flags if flag[-1].isdigit()}
    return ReadingSettings(
        detector_side=int(side),
        detector_side_rule=rule,
        angle_classifier="cls" in flags,
        recognizer_batch=numbers.get("batch", 1),
        max_lines=numbers.get("lines", 3),
    )


def recall(similarity: np.ndarray, ks: tuple[int, ...] = (1, 10)) -> dict[int, float]:
    """Row i's true match is column i; ties count against it."""
    own = similarity[np.arange(len(similarity)), np.arange(len(similarity))]
    ranks = (similarity > own[:, None]).sum(axis=1)
    return {k: float((ranks < k).mean()) for k in ks}


def measure(books: pd.DataFrame, options: ReadingSettings) -> dict[str, float]:
    reader = CoverReader(options)
    reader.read(Path(books["path"][0]))  # warm the sessions
    readings = [reader.read(Path(path)) for path in books["path"]]
    seconds = [r.seconds for r in readings]
    texts = [r.text for r in readings]
    titles = books["name"].tolist()
    title_author = (books["name"] + " " + books["author"]).tolist()
    to_cover = recall(TextMatcher.from_texts(texts).similarity(titles))
    to_title = recall(TextMatcher.from_texts(title_author).similarity(texts))
    return {
        "mean_s": statistics.mean(seconds),
        "p95_s": sorted(seconds)[int(0.95 * (len(seconds) - 1))],
        "no_text": float(np.mean([not t for t in texts])),
        "t2i_r1": to_cover[1],
        "t2i_r10": to_cover[10],
        "i2t_r1": to_title[1],
        "i2t_r10": to_title[10],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--books", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--settings",
        default=DEFAULT_SETTINGS,
        help="side:min|max[:cls][:batch<n>][:lines<n>], comma-separated; the first is the reference",
    )
    args = parser.parse_args(argv)
    if not (args.data_root / "bookdepository-covers").is_dir():
        raise SystemExit(f"{args.data_root}/bookdepository-covers not found: this benchmark reads the real covers")
    books = sampled_books(args.data_root, args.books, args.seed)
    print(
        f"{len(books)} books, one cover each; chance R@1 {1 / len(books):.4f}, R@10 {min(1.0, 10 / len(books)):.4f}; one thread"
    )
    print(
        f"{'setting':28s} {'s/cover':>8s} {'p95 s':>7s} {'covers/s':>8s} {'no text':>7s} {'t2i R@1':>8s} {'t2i R@10':>8s} "
        f"{'i2t R@1':>8s} {'i2t R@10':>8s} {'vs ref R@10':>11s}"
    )
    reference = None
    for text in args.settings.split(","):
        started = time.perf_counter()
        figures = measure(books, parse_setting(text))
        reference = reference or figures
        delta = min(figures["t2i_r10"] - reference["t2i_r10"], figures["i2t_r10"] - reference["i2t_r10"])
        print(
            f"{text:28s} {figures['mean_s']:8.3f} {figures['p95_s']:7.3f} {1 / figures['mean_s']:8.1f} {figures['no_text']:7.3f} "
            f"{figures['t2i_r1']:8.3f} {figures['t2i_r10']:8.3f} {figures['i2t_r1']:8.3f} {figures['i2t_r10']:8.3f} "
            f"{delta:+11.3f}   ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
