"""The seeds' open questions, answered by DVC experiments on the user's own data:

- caption: does the predicted genre in the caption help (the book-cover paper's hypothesis)? Captions
  "{title} by {author}", "... , {genre}" (the classifier's prediction) and, as an upper bound,
  "... , {category}" (the cover's own category), each queried with a title alone and a title + genre;
- sampler: random batches or batches balanced over the predicted genres;
- learning_curve: 10 / 25 / 50 / 100 % of the training books, the same validation and test books.

Each variant is one `dvc exp run` in the workspace (so `dvc exp show` lists it with its params and
metrics, and `dvc exp apply` brings it back), starting from the pipeline's own run: only the stages a
variant's params touch rerun, and every variant sets all the varied params, so none inherits another's.
Queued runs (`--queue`) would run in a temporary copy where the relative data.root does not resolve.
Experiment runs register their CLIP as a challenger and never move @champion (tasks/clip/evaluation.py
reads DVC_EXP_NAME). Afterwards the workspace is put back as it was (params, dvc.lock, metrics, plots,
and the DVC-cached outputs), and the answers are written to metrics/*_experiment.json and
plots/clip_learning_curve.csv.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from tasks.platform.data_versioning import dvc_executable
from tasks.platform.errors import UserError
from tasks.platform.outputs import write_json
from tasks.platform.settings import Settings

log = logging.getLogger(__name__)

STUDIES = ("caption", "sampler", "learning_curve")
TITLE_AUTHOR, PREDICTED_GENRE, COVER_CATEGORY = "{title} by {author}", "{title} by {author}, {genre}", "{title} by {author}, {category}"
FRACTIONS = (0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Variant:
    study: str
    name: str  # the DVC experiment's name
    caption_template: str
    batch_sampler: str = "random"
    train_fraction: float = 1.0

    def set_params(self) -> list[str]:
        """`-S` values for every varied param: a variant never inherits another's. DVC parses them with Hydra's
        grammar, where braces and commas need a quoted string."""
        quoted = "'" + self.caption_template.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return [f"labeling.caption_template={quoted}", f"clip.batch_sampler={self.batch_sampler}",
                f"clip.train_fraction={self.train_fraction}"]


def variants(settings: Settings, studies: tuple[str, ...] = STUDIES) -> list[Variant]:
    """The variants of the chosen studies; the learning curve and the sampler vary the params.yaml caption."""
    caption = settings.labeling.caption_template
    chosen = {
        "caption": [Variant("caption", "caption-title-author", TITLE_AUTHOR),
                    Variant("caption", "caption-predicted-genre", PREDICTED_GENRE),
                    Variant("caption", "caption-cover-category", COVER_CATEGORY)],
        "sampler": [Variant("sampler", f"sampler-{sampler}", caption, batch_sampler=sampler) for sampler in ("random", "balanced")],
        "learning_curve": [Variant("learning_curve", f"train-{round(f * 100)}pct", caption, train_fraction=f) for f in FRACTIONS],
    }
    return [variant for study in studies for variant in chosen[study]]


class ExperimentError(UserError):
    """The experiments cannot start (or a `dvc exp run` failed): the message says why and what to do."""


def _dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    executable = dvc_executable()
    if executable is None:
        raise ExperimentError("no dvc executable beside this Python or on PATH; `make setup` installs it")
    # The stages' `python -m flows.<stage>` must find this environment's Python, whatever PATH the caller had.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run([executable, *args], capture_output=True, text=True, env={**os.environ, "PATH": path})
    if check and done.returncode != 0:
        raise ExperimentError(f"dvc {' '.join(args[:2])} failed: {(done.stderr or done.stdout).strip()[-1500:]}")
    return done


def require_clean_baseline() -> None:
    """Variants start from the pipeline's run with params.yaml: it must exist and be what dvc.lock records."""
    if not Path("dvc.lock").is_file():
        raise ExperimentError("no dvc.lock: run the pipeline first (`make run` or `dvc repro`); the experiments start from it")
    status = _dvc("status", "--json")
    if json.loads(status.stdout or "{}"):
        raise ExperimentError("`dvc status` is not clean: run `dvc repro` (or `make run`) first, so every variant starts "
                              "from outputs that match params.yaml")


class SavedWorkspace:
    """What the experiments change in the workspace, copied aside and put back afterwards."""

    PATHS = ("params.yaml", "dvc.lock")

    def __init__(self, settings: Settings) -> None:
        self.folders = (settings.paths.metrics_dir, settings.paths.plots_dir)
        self.copy = Path(tempfile.mkdtemp(prefix="bookcovers-baseline-"))
        for path in self.PATHS:
            shutil.copy2(path, self.copy / Path(path).name)
        for folder in self.folders:
            if folder.is_dir():
                shutil.copytree(folder, self.copy / folder.name)

    def restore(self) -> None:
        for path in self.PATHS:
            shutil.copy2(self.copy / Path(path).name, path)
        for folder in self.folders:
            if (self.copy / folder.name).is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                shutil.copytree(self.copy / folder.name, folder)
        _dvc("checkout", "--force")  # the models and data outputs of dvc.lock, from DVC's cache
        shutil.rmtree(self.copy, ignore_errors=True)


def run_variant(variant: Variant, settings: Settings) -> dict[str, object]:
    """One `dvc exp run` in the workspace; its evaluation, as the evaluate stage wrote it."""
    _dvc("exp", "remove", variant.name, check=False)  # a rerun replaces the experiment of that name
    args = ["exp", "run", "--name", variant.name]
    for value in variant.set_params():
        args += ["--set-param", value]
    log.info("dvc exp run %s (%s)", variant.name, ", ".join(variant.set_params()))
    _dvc(*args)
    clip = json.loads((settings.paths.metrics_dir / "clip.json").read_text(encoding="utf-8"))
    trained = json.loads((settings.paths.metrics_dir / "clip_train.json").read_text(encoding="utf-8"))
    return {"variant": variant.__dict__, "test_books": clip["test_books"], "train_pairs": trained.get("train_pairs"),
            "base": clip["base"], "finetuned": clip["finetuned"], "queries": clip.get("queries", {}),
            "registered_version": clip["registry"]["registered_version"]}


def run_studies(settings: Settings, studies: tuple[str, ...] = STUDIES) -> dict[str, Path]:
    """Every variant of the chosen studies, then the workspace as it was, then the answers."""
    require_clean_baseline()
    chosen = variants(settings, studies)
    baseline = (settings.labeling.caption_template, settings.clip.batch_sampler, settings.clip.train_fraction)
    # The variants equal to params.yaml first (DVC has nothing to rerun while the workspace is the baseline), then
    # those with its captions (their labels and shards are the baseline's), the other captions last: each caption
    # change reruns the labeling and the shards' image features.
    order = sorted(chosen, key=lambda v: ((v.caption_template, v.batch_sampler, v.train_fraction) != baseline,
                                          v.caption_template != baseline[0]))
    saved = SavedWorkspace(settings)
    results: dict[str, dict[str, object]] = {}
    try:
        for variant in tqdm(order, desc="DVC experiments", unit="experiment"):
            results[variant.name] = run_variant(variant, settings)
    finally:
        saved.restore()
    return write_answers(settings, chosen, results)


def _figures(result: dict[str, object], k: int, model: str = "finetuned") -> dict[str, float]:
    """One model's figures in a variant's evaluation: recall both ways, zero-shot, each query style, the genre spread."""
    metrics, queries = result[model], result["queries"]
    figures = {f"text_to_image_R@{k}": metrics[f"text_to_image_R@{k}"], f"image_to_text_R@{k}": metrics[f"image_to_text_R@{k}"],
               "zero_shot_category_accuracy": metrics["zero_shot_category_accuracy"]}
    for style, by_model in queries.items():
        figures[f"{style}_query_text_to_image_R@{k}"] = by_model[model][f"text_to_image_R@{k}"]
    if f"genre_text_to_image_R@{k}_std" in metrics:
        figures["genre_recall_std"] = metrics[f"genre_text_to_image_R@{k}_std"]
    return figures


def write_answers(settings: Settings, chosen: list[Variant], results: dict[str, dict[str, object]]) -> dict[str, Path]:
    """metrics/<study>_experiment.json per study (figures of every variant, the gallery, the base model) and the plots."""
    k = max(settings.evaluate.recall_k)
    written: dict[str, Path] = {}
    rows_of: dict[str, dict[str, dict[str, object]]] = {}
    for study in dict.fromkeys(variant.study for variant in chosen):
        rows = rows_of[study] = {
            v.name: {**{key: value for key, value in v.__dict__.items() if key != "study"},
                     "train_pairs": results[v.name]["train_pairs"], "registered_version": results[v.name]["registered_version"],
                     **_figures(results[v.name], k)}
            for v in chosen if v.study == study}
        first = results[next(iter(rows))]
        written[study] = settings.paths.metrics_dir / f"{study}_experiment.json"
        write_json(written[study], {"test_books": first["test_books"], "chance_R@k": round(k / max(1, first["test_books"]), 6),
                                    "base": _figures(first, k, model="base"), "variants": rows})
    if "caption" in rows_of:
        queries = [("its own captions", f"text_to_image_R@{k}"),
                   *((style, f"{style}_query_text_to_image_R@{k}") for style in settings.evaluate.query_templates)]
        frame = pd.DataFrame([{"trained on | queried with": f"{name.removeprefix('caption-')} | {label}",
                               f"text_to_image_R@{k}": row[key]}
                              for name, row in rows_of["caption"].items() for label, key in queries if key in row])
        written["caption_plot"] = _write_plot(frame, settings.paths.plots_dir / "caption_experiment.csv")
    if "learning_curve" in rows_of:
        columns = ["train_fraction", "train_pairs", f"text_to_image_R@{k}", f"image_to_text_R@{k}", "zero_shot_category_accuracy"]
        frame = pd.DataFrame([{column: row[column] for column in columns} for row in rows_of["learning_curve"].values()])
        written["learning_curve_plot"] = _write_plot(frame.sort_values("train_fraction"),
                                                     settings.paths.plots_dir / "clip_learning_curve.csv")
    return written


def _write_plot(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
