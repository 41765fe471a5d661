"""`bookcovers experiments`: the variants each set every varied param (so none inherits another's),
in a form DVC's -S parser accepts; the answers files; and an experiment run never moves @champion."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.clip.experiments import COVER_CATEGORY, PREDICTED_GENRE, TITLE_AUTHOR, Variant, variants, write_answers
from tasks.platform.settings import Settings


def test_the_caption_study_varies_only_the_template_and_every_variant_sets_all_varied_params() -> None:
    chosen = variants(Settings())
    assert len({v.name for v in chosen}) == len(chosen) == 3 + 2 + 4
    captions = [v for v in chosen if v.study == "caption"]
    assert [v.caption_template for v in captions] == [TITLE_AUTHOR, PREDICTED_GENRE, COVER_CATEGORY]
    assert {(v.batch_sampler, v.train_fraction) for v in captions} == {("random", 1.0)}
    for variant in chosen:
        assert [p.split("=", 1)[0] for p in variant.set_params()] == [
            "labeling.caption_template", "clip.batch_sampler", "clip.train_fraction"]
    curve = [v.train_fraction for v in chosen if v.study == "learning_curve"]
    assert curve == [0.1, 0.25, 0.5, 1.0]
    assert {v.caption_template for v in chosen if v.study != "caption"} == {Settings().labeling.caption_template}


def test_templates_are_quoted_for_dvcs_hydra_parser() -> None:
    assert Variant("caption", "x", "{title} by {author}, {genre}").set_params()[0] == \
        "labeling.caption_template='{title} by {author}, {genre}'"
    assert Variant("caption", "x", "{title}'s cover").set_params()[0] == "labeling.caption_template='{title}\\'s cover'"


def result(r10: float, train_pairs: int, spread: float = 0.1) -> dict[str, object]:
    tuned = {"text_to_image_R@10": r10, "image_to_text_R@10": r10 / 2, "zero_shot_category_accuracy": 0.2,
             "genre_text_to_image_R@10_std": spread}
    base = {"text_to_image_R@10": 0.006, "image_to_text_R@10": 0.006, "zero_shot_category_accuracy": 0.05}
    queries = {"title_only": {"base": {"text_to_image_R@10": 0.005}, "finetuned": {"text_to_image_R@10": r10 - 0.01}}}
    return {"test_books": 1000, "train_pairs": train_pairs, "base": base, "finetuned": tuned, "queries": queries,
            "registered_version": "2"}


def test_the_answers_hold_every_variant_the_gallery_and_the_curve(project_dir: Path) -> None:
    settings = Settings()
    chosen = variants(settings, ("caption", "learning_curve"))
    results = {v.name: result(0.05 + v.train_fraction / 10 + (0.02 if "genre" in v.name else 0), int(800 * v.train_fraction))
               for v in chosen}
    written = write_answers(settings, chosen, results)
    caption = json.loads(written["caption"].read_text())
    assert caption["test_books"] == 1000 and caption["chance_R@k"] == 0.01
    assert set(caption["variants"]) == {"caption-title-author", "caption-predicted-genre", "caption-cover-category"}
    row = caption["variants"]["caption-predicted-genre"]
    assert row["caption_template"] == PREDICTED_GENRE and row["text_to_image_R@10"] == pytest.approx(0.17)
    assert row["title_only_query_text_to_image_R@10"] == pytest.approx(0.16) and row["genre_recall_std"] == 0.1
    assert caption["base"]["title_only_query_text_to_image_R@10"] == 0.005
    bars = pd.read_csv(written["caption_plot"])
    assert "predicted-genre | title_only" in bars["trained on | queried with"].tolist() and len(bars) == 3 * 2
    curve = pd.read_csv(written["learning_curve_plot"])
    assert curve["train_fraction"].tolist() == [0.1, 0.25, 0.5, 1.0] and curve["train_pairs"].is_monotonic_increasing


def test_an_experiment_run_registers_a_challenger_and_never_moves_the_champion(project_dir: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from tasks.clip.evaluation import _decide
    from tasks.platform.registry import champion_version

    store = MlflowClient(tracking_uri=f"sqlite:///{project_dir / 'mlflow.db'}", registry_uri=f"sqlite:///{project_dir / 'mlflow.db'}")
    store.create_registered_model("book-cover-clip")
    for _ in range(2):
        store.create_model_version("book-cover-clip", source=str(project_dir))
    store.set_registered_model_alias("book-cover-clip", "champion", "1")
    monkeypatch.setenv("DVC_EXP_NAME", "sampler-balanced")
    decision = _decide(Settings(), store, "2", tuned_score=0.9, base_score=0.01, books=None, covers=None)
    assert not decision.promoted and "DVC experiment sampler-balanced" in decision.reason
    assert champion_version(store, "book-cover-clip", "champion") == "1"
