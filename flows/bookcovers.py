"""`bookcovers`: the one command line of the product.

    bookcovers run [section.key=value ...]         the whole pipeline, then its summary
    bookcovers stage NAME [section.key=value ...]  one stage (the same flow `dvc repro` runs)
    bookcovers classify LISTING [-o OUT]           genres for a new listing from the classifier champion
    bookcovers add-covers FOLDER                   a new covers folder labeled, embedded and added to the cover index
    bookcovers monitor [BATCH]                     drift report of a new batch (or of every unreported one)
    bookcovers search "a title" | --cover FILE     covers for a title, or the genre of a cover
    bookcovers zero-shot COVER ... --labels "A, B"  each of your labels' probability for each cover
    bookcovers serve                               the search page
    bookcovers ui start|stop                       Prefect + MLflow servers with the deployments
    bookcovers experiments [--study NAME ...]      caption, sampler and learning-curve DVC experiments
    bookcovers summary                             the last run's summary, from metrics/
    bookcovers promote classifier|clip VERSION     make a version champion by hand

Heavy libraries (Prefect, torch, MLflow) are imported inside the command that needs them, so
`--help` and a mistyped command answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from tasks.platform.errors import UserError
from tasks.platform.settings import DEFAULT_PARAMS_FILE, Settings, SettingsError, load_settings

# DVC stage name -> the module under flows/ whose `<name>_flow` runs it (dvc.yaml's cmd is `python -m flows.<name>`).
STAGE_NAMES = ("generate", "validate", "read_covers", "train_classifier", "label_covers", "shard_covers", "finetune_clip", "evaluate",
               "index_covers")

COMMANDS_HELP = {
    "run": "run the whole pipeline as one Prefect flow (validate, train + select the classifier, label covers, shard "
           "covers, fine-tune CLIP, evaluate, index covers) and print its summary; writes data/processed/, models/, "
           "metrics/, plots/, MLflow runs and registry versions, and commits the outputs to DVC",
    "stage": "run one stage as its own Prefect flow, as `dvc repro` does; writes that stage's DVC outputs",
    "classify": "label a new listing (any CSV layout the readers know: book32's, 'Category,Title', or a header with title "
                "and optionally author and id) with the classifier champion, without retraining; streams the file in "
                "classify.chunk_rows chunks, validates each row with the listing checks, writes genre, probability, model "
                "version and the input row (source_row) to OUT (.csv or .parquet; default classify.output_dir/<name>.genres.csv), "
                "bad rows with their reasons to <OUT>.quarantine.csv, figures to <OUT>.summary.json, and an MLflow run",
    "add-covers": "add a new covers folder (its one CSV: book-covers.csv's layout, or title,author,image[,category] with "
                  "image paths relative to the CSV) to the cover index without rebuilding it: validated with the covers checks, "
                  "labeled by the classifier champion, embedded by the CLIP that built the index; `search` and the search "
                  "page find the new covers at once. Writes add_covers.batches_dir/NNNN-<digest>/ (the batch; the "
                  "index_covers stage rebuilds from it too), the new index, the quarantined rows to "
                  "classify.output_dir/<folder>.<csv>.covers-quarantine.csv, and an MLflow run. The same folder twice adds nothing",
    "monitor": "compare a new batch with the champions' reference and say whether it drifted: a `bookcovers classify` "
               "output (title length and words, script, missing authors, predicted genres and their probability against "
               "the classifier champion's held-out test split) or an add-covers batch folder (image size, brightness, "
               "contrast, saturation and CLIP embeddings against the covers the pipeline indexed). Without BATCH, every "
               "classify output and added batch that has no report yet. Writes monitor.reports_dir/<batch>.drift.html "
               "and .json and an MLflow run; monitor.on_drift=fail makes a drifted batch exit with status 2",
    "search": "print the covers closest to a title (CLIP on the title and its predicted or chosen genre, fused with the "
              "title's match against each cover's read text), or for a cover (--cover) what it reads, the book it names when "
              "the read text matches one with a margin, its genre and the closest titles; each result says what found it. "
              "--batch FILE.csv -o OUT.csv answers a whole file of title or cover queries with the models loaded once. "
              "Reads the cover index. Each call loads both champions first (about 10 s on 2 CPU cores with the towers "
              "CLIP); for many queries use --batch or `bookcovers serve`",
    "zero-shot": "print, for each cover, the probability of each of your labels (\"Romance, Travel, Cookbooks\"), by the "
                 "CLIP that built the cover index, prompting search.label_prompt_template (\"a book cover of {label}\"); "
                 "reads the cover index's CLIP, writes nothing",
    "serve": "serve the search page on http://HOST:PORT (default 127.0.0.1:8000); reads the cover index",
    "ui": "start or stop the Prefect server, the deployments' process and the MLflow server in the background; "
          "PID files and logs in .ui/",
    "experiments": "answer the seeds' questions on your data with DVC experiments, one `dvc exp run` per variant from the "
                   "pipeline's run (run it first): captions with or without the predicted genre (and the cover's own "
                   "category, as a bound), random vs genre-balanced batches, 10, 25, 50 and 100 percent of the training books. "
                   "Writes metrics/<study>_experiment.json and plots/clip_learning_curve.csv; `dvc exp show` lists every "
                   "variant; registers each variant's CLIP as a challenger, never champion; puts the workspace back as "
                   "it was",
    "summary": "print the summary of the last run from metrics/ and the registry's aliases; writes nothing",
    "promote": "make a registered version the champion by hand, e.g. after deliberately switching data sets (the pipeline "
               "never promotes a model trained on other data than the champion's without a fair comparison); moves the "
               "alias, records why in its history, and for the classifier refreshes models/classifier/",
}


def parser() -> argparse.ArgumentParser:
    from flows import ui

    root = argparse.ArgumentParser(prog="bookcovers", description="Book listings and covers -> a genre classifier, a "
                                   "fine-tuned CLIP and a cover search, run as one pipeline.",
                                   epilog="`bookcovers COMMAND --help` says what each command does and writes.")
    root.add_argument("--params", default=str(DEFAULT_PARAMS_FILE), help="params file (default: params.yaml)")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=COMMANDS_HELP[name], description=COMMANDS_HELP[name])

    overrides = {"nargs": "*", "metavar": "section.key=value", "help": "override any param, e.g. clip.epochs=2"}
    command("run").add_argument("overrides", **overrides)
    stage = command("stage")
    stage.add_argument("name", choices=STAGE_NAMES, metavar="NAME", help="one of: " + ", ".join(STAGE_NAMES))
    stage.add_argument("overrides", **overrides)
    classify = command("classify")
    classify.add_argument("listing", type=Path, help="the listing file to classify")
    classify.add_argument("-o", "--output", type=Path, default=None, help="where the predictions go (.csv or .parquet)")
    classify.add_argument("overrides", **overrides)
    add = command("add-covers")
    add.add_argument("folder", type=Path, help="the covers folder (or its CSV)")
    add.add_argument("overrides", **overrides)
    monitor = command("monitor")
    monitor.add_argument("batch", nargs="?", default=None, help="a classify output or an add-covers batch folder")
    monitor.add_argument("overrides", **overrides)
    search = command("search")
    search.add_argument("title", nargs="?", default="", help="a book title")
    search.add_argument("--genre", default=None, help="search within this genre instead of the predicted one")
    search.add_argument("--cover", type=Path, default=None, help="an image: print its genre and the closest titles")
    search.add_argument("--author", default="", help="the book's author, when known: matched against the covers' read text too")
    search.add_argument("--batch", type=Path, default=None, metavar="FILE.csv",
                        help="many queries: a CSV with a title (and optionally author) column, or an image column (paths "
                             "relative to the CSV); needs -o")
    search.add_argument("-o", "--output", type=Path, default=None, metavar="OUT.csv",
                        help="with --batch: one row per query and rank (query_row, rank, score, title, author, image, genre, "
                             "matched, ...); a query that cannot be searched gets one row with its error")
    search.add_argument("-k", type=int, default=5, help="how many results (default 5; at most 50)")
    zero_shot = command("zero-shot")
    zero_shot.add_argument("covers", nargs="+", type=Path, metavar="COVER", help="one or more cover images")
    zero_shot.add_argument("--labels", required=True, help='two or more labels, comma-separated, e.g. "Romance, Travel, Cookbooks"')
    serve = command("serve")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    ui.add_arguments(command("ui"))
    experiments = command("experiments")
    experiments.add_argument("--study", action="append", choices=["caption", "sampler", "learning_curve"],
                             help="only this study (repeatable); default: all three")
    command("summary")
    promote = command("promote")
    promote.add_argument("model", choices=["classifier", "clip"], help="book-genre-classifier or book-cover-clip")
    promote.add_argument("version", help="the registered version to make champion")
    return root


def check_params(args: argparse.Namespace, data_root: bool = True) -> None:
    """Validate params and overrides (and that a chosen data.root exists) before Prefect, torch and MLflow load:
    a typo answers in about a second instead of after ~20 s of imports."""
    settings = load_settings(args.params, args.overrides)
    if data_root:
        settings.data.source_root()


def run_pipeline(args: argparse.Namespace) -> None:
    check_params(args)
    from flows.pipeline import pipeline
    from flows.runner import run_flow
    from tasks.platform.summary import render_summary

    run_flow(pipeline, ["--params", args.params, *args.overrides], report=render_summary)


def run_stage(args: argparse.Namespace) -> None:
    check_params(args, data_root=args.name == "validate")
    from flows.runner import run_flow

    flow = getattr(importlib.import_module(f"flows.{args.name}"), f"{args.name}_flow")
    run_flow(flow, ["--params", args.params, *args.overrides])


def classify_listing(args: argparse.Namespace) -> None:
    check_params(args, data_root=False)
    if not args.listing.is_file():
        raise UserError(f"{args.listing}: no such file; give the path of a listing to classify")
    from flows.classify_listing import classify_listing_flow
    from flows.runner import run_flow

    arguments = {"listing": str(args.listing), "output": str(args.output) if args.output else None}
    summary = run_flow(classify_listing_flow, ["--params", args.params, *args.overrides], arguments=arguments)
    print(f"{summary['rows_classified']} of {summary['rows_in']} rows classified into {summary['output']} "
          f"({summary['rows_per_second']:,.0f} rows/s, champion v{summary['model_version']}); "
          f"{summary['rows_quarantined']} quarantined into {summary['quarantine']}")
    print_drift(summary)


def add_cover_folder(args: argparse.Namespace) -> None:
    check_params(args, data_root=False)
    if not args.folder.exists():
        raise UserError(f"{args.folder}: no such folder; give a covers folder or its CSV")
    from flows.add_covers import add_covers_flow
    from flows.runner import run_flow

    summary = run_flow(add_covers_flow, ["--params", args.params, *args.overrides], arguments={"folder": str(args.folder)})
    if summary["already_added"]:
        print(f"{args.folder}: already in the cover index (batch {summary['batch']}); nothing added")
    else:
        print(f"{summary['covers_indexed']} covers added to the cover index (now {summary['index_covers']}); "
              f"{summary['books_already_indexed']} books were already there")
    print(f"{summary['rows_quarantined']} of {summary['rows_in']} rows quarantined into {summary['quarantine']}")
    print_drift(summary)


def print_drift(summary: dict[str, object]) -> None:
    for line in summary.get("drift", []):  # type: ignore[union-attr]
        print(f"drift report: {line} (monitor.reports_dir has the HTML)")


def monitor_batches(args: argparse.Namespace) -> None:
    if args.batch is not None and "=" in args.batch and not Path(args.batch).exists():  # `monitor key=value`: no batch given
        args.overrides, args.batch = [args.batch, *args.overrides], None
    check_params(args, data_root=False)
    if args.batch is not None and not Path(args.batch).exists():
        raise UserError(f"{args.batch}: no such file or folder; give a classify output or an add-covers batch folder")
    from flows.monitor import monitor_flow
    from flows.runner import run_flow

    result = run_flow(monitor_flow, ["--params", args.params, *args.overrides], arguments={"batch": args.batch})
    print("\n".join(f"{line}  ({html})" for line, html in zip(result["drift"], result["reports"])) or "no batch without a report")


def search_covers(args: argparse.Namespace) -> None:
    if args.batch is not None:
        search_batch_file(args)
        return
    if args.cover is not None and not args.cover.is_file():
        raise UserError(f"{args.cover}: no such file")
    print_search(args, _cover_search(load_settings(args.params)))


def search_batch_file(args: argparse.Namespace) -> None:
    """The queries file and the output are checked before the models load (seconds)."""
    from tasks.search.batch import check_output, read_batch, search_batch

    if args.output is None:
        raise UserError("--batch needs -o OUT.csv: where the results go")
    check_output(args.output)
    queries = read_batch(args.batch)
    if not 1 <= args.k <= 50:
        raise UserError(f"-k must be between 1 and 50, got {args.k}")
    summary = search_batch(_cover_search(load_settings(args.params)), queries, args.k, args.output)
    print(f"{summary['queries']} {summary['kind']} queries: {summary['answered']} answered, {summary['refused']} refused "
          f"(their reasons in the error column) -> {summary['output']}")


def print_search(args: argparse.Namespace, search) -> None:  # noqa: ANN001  CoverSearch, imported late
    if args.cover is not None:
        result = search.by_cover(args.cover.read_bytes(), args.k)
        if result.read_text is not None:
            print(f"read on the cover: {result.read_text!r}" if result.read_text else "read on the cover: no text")
        if result.identified is not None:
            book = result.identified
            print(f"this looks like {book.title} by {book.author or 'an unknown author'} (read-text match {book.text_score:.2f}); "
                  f"its genre: {book.genre}")
        guess = " (low confidence: a guess)" if result.low_confidence else ""
        signals = "zero-shot + read text" if result.read_text else "zero-shot"
        print(f"genre ({signals}): " + ", ".join(f"{genre} {p:.2f}" for genre, p in result.genres) + guess)
        print("closest titles:")
    else:
        result = search.by_title(args.title, args.genre, args.k, args.author)
        how = "chosen" if result.genre_probability is None else f"predicted, p = {result.genre_probability:.2f}"
        if result.low_confidence:
            how += ": low confidence, a guess; --genre searches within the genre you choose"
        print(f"genre: {result.genre} ({how})")
    for rank, hit in enumerate(result.hits, start=1):
        print(f"{rank:3d}. {hit.score:.3f}  {hit.title} — {hit.author or 'unknown author'} [{hit.genre}]  "
              f"found by {hit.matched} (text {hit.text_score:.2f}, CLIP {hit.clip_score:.2f})  {hit.image_path}")


def zero_shot_labels(args: argparse.Namespace) -> None:
    """Labels and files are checked before the model loads: a typo costs a second, not a model load."""
    from tasks.search.queries import parse_labels, read_cover

    labels = parse_labels(args.labels)
    covers = {path: read_cover(path) for path in args.covers}
    import torch

    from tasks.search.zero_shot import ZeroShotLabels

    torch.set_num_threads(1)
    scorer = ZeroShotLabels.from_settings(load_settings(args.params))
    for path, image in covers.items():
        print(f"{path}: " + ", ".join(f"{label} {p:.2f}" for label, p in scorer.score(image, labels)))


def serve_page(args: argparse.Namespace) -> None:
    import uvicorn

    from tasks.search.app import create_app
    from tasks.search.zero_shot import ZeroShotLabels

    settings = load_settings(args.params)
    search = _cover_search(settings)
    labels = ZeroShotLabels(search.bundle, settings.search.label_prompt_template)
    uvicorn.run(create_app(search, labels), host=args.host, port=args.port, log_level="warning")


def _cover_search(settings: Settings):  # noqa: ANN202  CoverSearch, imported late (torch, MLflow)
    import torch

    from tasks.platform.local_store import follow_project_folder
    from tasks.platform.tracking import tracking_uri
    from tasks.search.engine import CoverSearch

    follow_project_folder(tracking_uri())  # a copied project searches with its own models
    # One query at a time is too small to share between threads; a second thread only adds
    # wake-up latency (p95 ~80 ms instead of ~12 ms at 100k covers, `make bench-search`).
    torch.set_num_threads(1)
    return CoverSearch.from_settings(settings)


def run_ui(args: argparse.Namespace) -> None:
    from flows import ui

    ui.run(args)


def run_experiments(args: argparse.Namespace) -> None:
    import logging

    from tasks.clip.experiments import STUDIES, run_studies

    logging.getLogger("tasks").setLevel(logging.INFO)  # each `dvc exp run` as it starts (Prefect's console handler prints it)
    written = run_studies(load_settings(args.params), tuple(args.study or STUDIES))
    print("\n".join(f"{study}: {path}" for study, path in written.items()))
    print("every variant: `dvc exp show`; the curve: `make plots`")


def print_summary(args: argparse.Namespace) -> None:
    from tasks.platform.summary import render_summary

    print(render_summary(load_settings(args.params)))


def promote(args: argparse.Namespace) -> None:
    from tasks.genre.champion import promote_classifier
    from tasks.platform.registry import promote_by_hand
    from tasks.platform.tracking import client, ensure_tracking_reachable

    settings = load_settings(args.params)
    ensure_tracking_reachable()
    registry = settings.mlflow
    if args.model == "classifier":
        promote_classifier(client(), registry, settings.classifier.select_metric, args.version, settings.paths.classifier_dir)
        name, rerun = registry.classifier_model_name, "`bookcovers run` (or `dvc repro`) relabels the covers with it"
    else:
        promote_by_hand(client(), registry.clip_model_name, registry.champion_alias, args.version, "promoted by hand (bookcovers promote)")
        name, rerun = registry.clip_model_name, "`bookcovers stage index_covers` rebuilds the cover index with it"
    print(f"{name} v{args.version} is now @{registry.champion_alias}; {rerun}")


HANDLERS: dict[str, Callable[[argparse.Namespace], None]] = {
    "run": run_pipeline, "stage": run_stage, "classify": classify_listing, "add-covers": add_cover_folder, "monitor": monitor_batches,
    "search": search_covers,
    "zero-shot": zero_shot_labels, "serve": serve_page, "ui": run_ui, "experiments": run_experiments, "summary": print_summary, "promote": promote,
}


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        HANDLERS[args.command](args)
    except (SettingsError, UserError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
