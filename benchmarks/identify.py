"""How often a cover's read text names its book, and how often it names the right one, per threshold pair
(`make bench-identify`, after `make run`): the measurement behind `hybrid.identify_min_score` and
`hybrid.identify_margin`.

Each validation book's cover (never a test book's) is read as the index read it, and its text matched
against the titles and authors of every book in the cover index, as `bookcovers search --cover` does for
an indexed cover; the rule (tasks/reading/fusion.py `identified`) names a book when the best match reaches
the score and beats every other book by the margin. Printed: coverage (share of covers named) and
precision (share of named covers named as their own book) for each pair.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from tasks.genre.labeling import work_keys
from tasks.platform.settings import load_settings
from tasks.reading.fusion import identified
from tasks.search.text_index import open_text_matchers, validation_rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--scores", default="0.3,0.4,0.5,0.6")
    parser.add_argument("--margins", default="0.05,0.1,0.15,0.2")
    args = parser.parse_args(argv)
    settings = load_settings(args.params)
    folder = settings.paths.cover_index
    books = pd.read_parquet(folder / "books.parquet")
    _, titles = open_text_matchers(folder, settings.hybrid)
    if titles is None:
        raise SystemExit(f"{folder} has no read text; run `make run` first")
    keys = work_keys(books).to_numpy()
    added = sum(int(batch["covers"]) for batch in json.loads((folder / "index.json").read_text()).get("batches", []))
    validation = validation_rows(books, len(books) - added, settings)
    scores = [titles.scores(text) if text else np.zeros(len(books), np.float32) for text in validation["read_text"].fillna("")]
    print(f"{len(validation)} validation covers against {len(books)} indexed books")
    print(f"{'min score':>9s} {'margin':>7s} {'coverage':>9s} {'precision':>9s}")
    for min_score in (float(v) for v in args.scores.split(",")):
        for margin in (float(v) for v in args.margins.split(",")):
            named = [(row, identified(s, keys, min_score, margin)) for row, s in zip(validation["index_row"], scores)]
            named = [(row, found) for row, found in named if found is not None]
            right = sum(keys[found] == keys[row] for row, found in named)
            print(
                f"{min_score:9.2f} {margin:7.2f} {len(named) / len(validation):9.3f} "
                f"{(right / len(named) if named else float('nan')):9.3f}"
            )


if __name__ == "__main__":
    main()
