"""`bookcovers search "a title" [--genre G] [-k 5]`, `bookcovers search --cover cover.jpg`, and
`bookcovers serve` (the search page on http://127.0.0.1:8000). Not a flow: queries are interactive."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tasks.errors import UserError
from tasks.settings import DEFAULT_PARAMS_FILE, SettingsError, load_settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bookcovers", description="Search the book covers with the champion models.")
    parser.add_argument("--params", default=str(DEFAULT_PARAMS_FILE), help="params file (default: params.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="covers for a title, or the genre of a cover")
    search.add_argument("title", nargs="?", default="", help="a book title")
    search.add_argument("--genre", default=None, help="search within this genre instead of the predicted one")
    search.add_argument("--cover", type=Path, default=None, help="an image: print its genre and the closest titles")
    search.add_argument("-k", type=int, default=5, help="how many results (default 5)")
    serve = commands.add_parser("serve", help="the search page")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    return parser.parse_args(argv)


def print_search(args: argparse.Namespace, search) -> None:  # noqa: ANN001  CoverSearch, imported late
    if args.cover is not None:
        if not args.cover.is_file():
            raise UserError(f"{args.cover}: no such file")
        result = search.by_cover(args.cover.read_bytes(), args.k)
        print("genre (zero-shot): " + ", ".join(f"{genre} {p:.2f}" for genre, p in result.genres))
        print("closest titles:")
    else:
        result = search.by_title(args.title, args.genre, args.k)
        how = "chosen" if result.genre_probability is None else f"predicted, p = {result.genre_probability:.2f}"
        print(f"genre: {result.genre} ({how})")
    for rank, hit in enumerate(result.hits, start=1):
        print(f"{rank:3d}. {hit.score:.3f}  {hit.title} — {hit.author or 'unknown author'} [{hit.genre}]  {hit.image_path}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import torch

        from tasks.cover_search import CoverSearch

        # One query at a time is too small to share between threads; a second thread only adds
        # wake-up latency (p95 ~80 ms instead of ~12 ms at 100k covers, `make bench-search`).
        torch.set_num_threads(1)
        search = CoverSearch.from_settings(load_settings(args.params))
        if args.command == "search":
            print_search(args, search)
            return
        import uvicorn

        from tasks.search_app import create_app

        uvicorn.run(create_app(search), host=args.host, port=args.port, log_level="warning")
    except (SettingsError, UserError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
