"""The whole pipeline on tiny generated data: through Prefect in-process, and through DVC as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from conftest import CATEGORY_MAPPING, PROJECT_ROOT, TINY_OVERRIDES

from tasks.platform.registry import alias_history, champion_version
from tasks.platform.settings import load_settings
from tasks.platform.tracking import client, file_md5

pytestmark = pytest.mark.slow

METRICS = ("validation.json", "classifier.json", "labeling.json", "clip_train.json", "clip.json")
# 300 covers leave ~40 test books: few enough to be quick, enough that recall@k is not noise.
TINY_GENERATE = ["data.root=data/raw/generated", "generate.listing_rows=600", "generate.cover_books=300", "generate.genres=6", "generate.seed=1"]
TINY_PIPELINE = [*TINY_GENERATE, *TINY_OVERRIDES, "clip.epochs=4"]


def test_pipeline_flow_registers_both_models_as_champions(prefect_harness: None, project_dir: Path) -> None:
    from flows.pipeline import pipeline

    overrides = [*TINY_PIPELINE, f"labeling.category_mapping={CATEGORY_MAPPING}"]
    results = pipeline(params_file=str(project_dir / "params.yaml"), overrides=overrides)
    settings = load_settings(project_dir / "params.yaml", overrides)
    for name in METRICS:
        assert (settings.paths.metrics_dir / name).is_file(), name
    assert (settings.paths.plots_dir / "clip_retrieval_gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("book-genre-classifier", "book-cover-clip"):
        description = client().get_model_version(name, "1").description
        assert all(part in description for part in ("Data: ", "md5", "Metrics: ", "Params: {", "Code: git")), description
    index = json.loads((settings.paths.cover_index / "index.json").read_text())
    assert index["version"] == "1" and index["covers"] + index["left_out"] == results["label-covers"]["books"] > 0
    mlflow_client = client()
    assert champion_version(mlflow_client, "book-genre-classifier", "champion") == "1"
    assert champion_version(mlflow_client, "book-cover-clip", "champion") == "1"
    clip = json.loads((settings.paths.metrics_dir / "clip.json").read_text())
    assert clip["finetuned"]["mean_recall"] > clip["base"]["mean_recall"]
    assert results["dvc"].startswith("skipped")  # overrides must never be recorded as params.yaml's outputs
    validation = results["validate-clean"]
    assert validation["listing"]["rows_in"] == validation["listing"]["rows_kept"] + validation["listing"]["rows_quarantined"]
    a_new_listing_is_classified_by_the_champion(project_dir, overrides)

    # The same run again, same inputs: byte-identical outputs, no new registry version, no new alias event.
    before = output_digests(settings)
    pipeline(params_file=str(project_dir / "params.yaml"), overrides=overrides)
    assert output_digests(settings) == before
    for name in ("book-genre-classifier", "book-cover-clip"):
        assert [str(v.version) for v in mlflow_client.search_model_versions(f"name='{name}'")] == ["1"], name
        assert [h["version"] for h in alias_history(mlflow_client, name, "champion")] == ["1"], name
    new_covers_are_added_and_a_full_rebuild_agrees(project_dir, overrides, settings)


def new_covers_are_added_and_a_full_rebuild_agrees(project_dir: Path, overrides: list[str], settings) -> None:
    """Day two: `add-covers` appends a generic covers folder to the index; index_covers rebuilds the same index."""
    from flows.add_covers import add_covers_flow
    from flows.index_covers import index_covers_flow

    folder = project_dir / "new covers"
    (folder / "img").mkdir(parents=True)
    for i, name in enumerate(["a cover.jpg", "b:cover.jpg"]):
        Image.new("RGB", (60, 90), (30 * i, 120, 200)).save(folder / "img" / name)
    (folder / "new.csv").write_text('title,author,image\n"Rome, a Walking Guide",Ann Bee,img/a cover.jpg\n'
                                    'Ancient Empires,Carl Dee,img/b:cover.jpg\nNo Image,X,img/absent.jpg\n', encoding="utf-8")
    summary = add_covers_flow(str(folder), str(project_dir / "params.yaml"), overrides)
    assert (summary["rows_in"], summary["rows_quarantined"], summary["covers_indexed"]) == (3, 1, 2)
    assert summary["classifier_version"] == summary["clip_version"] == "1"
    assert json.loads((Path(summary["folder"]) / "batch.json").read_text())["covers_indexed"] == 2  # rewritten once indexed
    assert len(summary["drift"]) == 1 and summary["drift"][0].startswith(Path(summary["folder"]).name)
    covers_report = json.loads((settings.monitor.reports_dir / f"covers-{Path(summary['folder']).name}.drift.json").read_text())
    assert {"image brightness", "image aspect ratio", "cover embeddings"} <= {m["name"] for m in covers_report["measures"]}
    index = settings.paths.cover_index
    incremental = {name: (index / name).read_bytes() for name in ("index.json", "books.parquet")}
    images = np.load(index / "images.npy")
    assert add_covers_flow(str(folder), str(project_dir / "params.yaml"), overrides)["already_added"]
    index_covers_flow(str(project_dir / "params.yaml"), overrides)
    assert json.loads((index / "index.json").read_bytes()) == json.loads(incremental["index.json"])
    assert pd.read_parquet(index / "books.parquet")["title"].tail(2).tolist() == ["Rome, a Walking Guide", "Ancient Empires"]
    np.testing.assert_allclose(np.load(index / "images.npy"), images, atol=1e-5)


def a_new_listing_is_classified_by_the_champion(project_dir: Path, overrides: list[str]) -> None:
    """Day two: `classify-listing` labels a listing the pipeline never saw, with champion v1, and tracks the run."""
    from flows.classify_listing import classify_listing_flow

    listing = project_dir / "new-books.csv"
    listing.write_text("title,author\nRick Steves Paris 2016,Rick Steves\n=cmd|' /C calc'!A0,x\nThe Joy of Cooking,\n", encoding="utf-8")
    summary = classify_listing_flow(str(listing), None, str(project_dir / "params.yaml"), overrides)
    assert (summary["rows_in"], summary["rows_classified"], summary["rows_quarantined"], summary["model_version"]) == (3, 2, 1, "1")
    predicted = pd.read_csv(summary["output"])
    assert predicted["source_row"].tolist() == [2, 4] and predicted["genre"].notna().all()
    assert client().get_run(summary["mlflow_run_id"]).data.metrics["rows_classified"] == 2
    report = json.loads((settings_of(project_dir, overrides).monitor.reports_dir / "listing-new-books.genres.drift.json").read_text())
    assert summary["drift"] == [f"new-books.genres.csv: {report['verdict']}"] and report["batch_rows"] == 2
    assert {m["name"] for m in report["measures"]} >= {"title script", "genre", "genre probability"}
    assert Path(report["html"]).read_text().count("<svg") == len(report["measures"])


def settings_of(project_dir: Path, overrides: list[str]):  # noqa: ANN201  Settings
    return load_settings(project_dir / "params.yaml", overrides)


def output_digests(settings) -> dict[str, str]:
    """md5 of every file of every DVC-tracked output (the metrics JSON carry run ids and timings)."""
    paths = settings.paths
    outputs = [paths.clean_listing, paths.clean_covers, paths.quarantine, paths.quarantine_summary,
               paths.classifier_dir, paths.labeled_covers, paths.clip_dir, paths.cover_index]
    files = [f for out in outputs for f in ([out] if out.is_file() else sorted(out.rglob("*"))) if f.is_file()]
    assert len(files) > len(outputs)
    return {str(f): file_md5(f) for f in files}


def write_tiny_project(target: Path) -> None:
    """A copy of the project with params.yaml shrunk, as a git + DVC repository."""
    for name in ("flows", "tasks", "config"):
        shutil.copytree(PROJECT_ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", "data/added_covers/.gitignore"):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / name, target / name)
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for override in TINY_PIPELINE:
        key, value = override.split("=", 1)
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


def training_runs(project: Path) -> dict[str, int]:
    from mlflow.tracking import MlflowClient

    store = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}", registry_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = store.search_runs([e.experiment_id for e in store.search_experiments()])
    return {name: sum(r.info.run_name == name for r in runs) for name in ("train-classifier", "fine-tune-clip")}


LOAD_CHAMPIONS = """
import mlflow, pandas as pd
mlflow.set_tracking_uri("sqlite:///mlflow.db")
genre = mlflow.pyfunc.load_model("models:/book-genre-classifier@champion").predict(pd.DataFrame({"title": ["Paris"], "author": [""]}))
clip = mlflow.pyfunc.load_model("models:/book-cover-clip@champion").predict(pd.DataFrame({"text": ["Paris"]}))
print("loaded", genre["genre"][0], len(clip["embedding"][0]), mlflow.get_experiment_by_name("book-covers").artifact_location)
"""


def assert_a_copied_project_uses_only_its_own_folder(project: Path, env: dict[str, str]) -> None:
    """cp -a, then the original is moved out of reach: the copy loads both champions and searches."""
    copy = project.with_name(project.name + "-copy")
    subprocess.run(["cp", "-a", str(project), str(copy)], check=True)
    away = project.with_name(project.name + "-away")
    project.rename(away)
    try:
        found = run([sys.executable, "-m", "flows.bookcovers", "search", "Rick Steves Paris 2016", "-k", "2"], copy, env)
        assert found.startswith("genre: "), found
        loaded = run([sys.executable, "-c", LOAD_CHAMPIONS], copy, env)
        assert "loaded" in loaded and str(copy / "mlruns") in loaded, loaded
    finally:
        away.rename(project)


def assert_experiments_leave_the_workspace_and_the_champion_as_they_were(project: Path, env: dict[str, str], dvc: str) -> None:
    """`bookcovers experiments --study sampler`: two `dvc exp run`s from the committed baseline; afterwards the
    params, dvc.lock, outputs and @champion are the baseline's, and `dvc exp show` lists both variants."""
    from mlflow.tracking import MlflowClient

    identity = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "test",
                "GIT_COMMITTER_EMAIL": "test@example.com"}
    env = {**env, **identity}
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-qm", "baseline"], project, env)
    params, lock = (project / "params.yaml").read_bytes(), (project / "dvc.lock").read_bytes()
    store = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}", registry_uri=f"sqlite:///{project / 'mlflow.db'}")
    champion = store.get_model_version_by_alias("book-cover-clip", "champion").version
    printed = run([sys.executable, "-m", "flows.bookcovers", "experiments", "--study", "sampler"], project, env)
    assert "sampler: metrics/sampler_experiment.json" in printed, printed
    answers = json.loads((project / "metrics" / "sampler_experiment.json").read_text())
    assert set(answers["variants"]) == {"sampler-random", "sampler-balanced"} and answers["test_books"] > 10
    assert answers["variants"]["sampler-balanced"]["batch_sampler"] == "balanced"
    shown = json.loads(subprocess.run([dvc, "exp", "show", "--json"], cwd=project, env=env, capture_output=True, text=True).stdout)
    names = {exp.get("name") for row in shown for exp in (row.get("experiments") or [])}
    assert {"sampler-random", "sampler-balanced"} <= names, names
    assert (project / "params.yaml").read_bytes() == params and (project / "dvc.lock").read_bytes() == lock
    assert "up to date" in run([dvc, "status"], project, env)
    assert store.get_model_version_by_alias("book-cover-clip", "champion").version == champion


def test_flow_then_dvc_status_clean_repro_reruns_only_what_changed(tmp_path: Path) -> None:
    write_tiny_project(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    dvc = str(Path(sys.executable).parent / "dvc")
    run(["git", "init", "-q"], tmp_path, env)
    run([dvc, "init", "-q"], tmp_path, env)
    run([dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], tmp_path, env)

    summary = run([sys.executable, "-m", "flows.pipeline"], tmp_path, env)
    assert "MLflow registry" in summary and "book-cover-clip" in summary
    assert "balanced accuracy" in summary and "agrees with the cover" in summary
    assert (tmp_path / "mlflow.db").is_file()
    assert "up to date" in run([dvc, "status"], tmp_path, env)
    assert "Running stage" not in run([dvc, "repro"], tmp_path, env)
    found = run([sys.executable, "-m", "flows.bookcovers", "search", "Rick Steves Paris 2016", "-k", "3"], tmp_path, env)
    assert found.startswith("genre: ") and found.count("\n  ") >= 2

    # The same pipeline again on unchanged data: every stage is skipped on DVC's word, no training run is made.
    trainings = training_runs(tmp_path)
    started = time.perf_counter()
    again = run([sys.executable, "-m", "flows.pipeline"], tmp_path, env)
    print(f"second pipeline run on unchanged inputs: {time.perf_counter() - started:.1f} s")
    skipped = next(line for line in again.splitlines() if "stages unchanged, skipped:" in line)
    assert all(stage in skipped for stage in ("train-classifier", "finetune-clip", "evaluate-clip")), skipped
    assert "ran: none" in skipped
    assert training_runs(tmp_path) == trainings and trainings["train-classifier"] == trainings["fine-tune-clip"] == 1
    assert "up to date" in run([dvc, "status"], tmp_path, env)

    assert_a_copied_project_uses_only_its_own_folder(tmp_path, env)
    assert_experiments_leave_the_workspace_and_the_champion_as_they_were(tmp_path, env, dvc)

    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["clip"]["epochs"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = run([dvc, "repro"], tmp_path, env)
    assert "Running stage 'finetune_clip'" in rerun and "Running stage 'evaluate'" in rerun
    assert "Running stage 'train_classifier'" not in rerun and "Running stage 'validate'" not in rerun
    assert "up to date" in run([dvc, "status"], tmp_path, env)
    run([dvc, "push"], tmp_path, env)
    assert any((tmp_path / "remote").rglob("*")), "dvc push wrote nothing to the local remote"
