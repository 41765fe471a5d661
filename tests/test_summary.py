"""The Prefect artifact of a pipeline run: each stage's key figures and a link to its MLflow run."""

from __future__ import annotations

from tasks.platform.summary import stage_table_markdown

RESULTS = {
    "validate-clean": {"listing": {"rows_in": 10, "rows_kept": 8, "rows_quarantined": 2}, "covers": {"rows_kept": 5, "rows_quarantined": 0},
                       "mlflow_run_id": "abcdef0123456789"},
    "train-classifier": {"selected": "linear_svm", "test": {"balanced_accuracy": 0.57531, "accuracy": 0.74},
                         "registry": {"registered_version": "3", "promoted": True}, "mlflow_run_id": "1234567890abcdef"},
    "index-covers": {"covers": 5, "version": "2"},
    "dvc": "skipped: params overridden",
}


def test_each_stage_is_a_row_with_its_figures_and_run() -> None:
    table = stage_table_markdown(RESULTS, "http://127.0.0.1:5000", "7")
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    assert "listing rows in 10; kept 8; quarantined 2" in rows["validate-clean"]
    assert "[abcdef01](http://127.0.0.1:5000/#/experiments/7/runs/abcdef0123456789)" in rows["validate-clean"]
    assert "selected linear_svm; test balanced accuracy 0.5753" in rows["train-classifier"] and "promoted True" in rows["train-classifier"]
    assert "covers indexed 5; CLIP version 2" in rows["index-covers"] and rows["index-covers"].split("|")[2].strip() == "–"
    assert table.splitlines()[2] == "| stage | MLflow run | key figures |"  # the link before the long column
    assert "skipped: params overridden" in rows["dvc"]


def test_a_local_store_shows_the_run_id_instead_of_a_link() -> None:
    table = stage_table_markdown(RESULTS, "sqlite:///mlflow.db", "7")
    assert "`abcdef0123456789`" in table and "http" not in table


def test_the_registry_lines_say_when_there_is_no_champion_yet() -> None:
    from tasks.platform.settings import Settings
    from tasks.platform.summary import _registry

    kept = {"registered_version": "1", "promoted": False, "champion_version": "none"}
    promoted = {"registered_version": "2", "promoted": True, "champion_version": "2"}
    lines = _registry(Settings(), {"registry": promoted}, {"registry": kept},
                      {"book-genre-classifier": "2", "book-cover-clip": None})
    assert lines == ["  book-genre-classifier: v2 promoted; @champion = v2",
                     "  book-cover-clip: v1 kept as challenger; @champion = none yet"]
    unreadable = _registry(Settings(), {"registry": promoted}, {}, None)
    assert unreadable == ["  book-genre-classifier: v2 promoted; @champion = v2 (as the run recorded it; the registry cannot be read now)"]


def test_the_summary_reads_the_champion_from_the_registry_not_from_the_run_record(project_dir) -> None:
    """The run recorded "@champion = v1"; the alias has since gone (or never stuck): the registry wins."""
    import json

    from mlflow.tracking import MlflowClient

    from tasks.platform.settings import Settings
    from tasks.platform.summary import render_summary

    settings = Settings()
    settings.paths.metrics_dir.mkdir(parents=True)
    recorded = {"registered_version": "1", "promoted": False, "champion_version": "1", "reason": "not better"}
    (settings.paths.metrics_dir / "clip.json").write_text(json.dumps({"registry": recorded, "test_books": 3, "base": {"zero_shot_category_accuracy": 0.1},
                                                                       "finetuned": {"zero_shot_category_accuracy": 0.1}}))
    summary = render_summary(settings)
    assert "book-cover-clip: v1 kept as challenger; @champion = none yet" in summary
    assert not (project_dir / "mlflow.db").exists()  # reading the registry created no store

    store = MlflowClient(tracking_uri=f"sqlite:///{project_dir / 'mlflow.db'}", registry_uri=f"sqlite:///{project_dir / 'mlflow.db'}")
    store.create_registered_model("book-cover-clip")
    for _ in range(2):
        store.create_model_version("book-cover-clip", source=str(project_dir))
    store.set_registered_model_alias("book-cover-clip", "champion", "2")
    assert "book-cover-clip: v1 kept as challenger; @champion = v2" in render_summary(settings)
