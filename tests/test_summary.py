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
    assert "covers indexed 5; CLIP version 2" in rows["index-covers"] and rows["index-covers"].endswith("| – |")
    assert "skipped: params overridden" in rows["dvc"]


def test_a_local_store_shows_the_run_id_instead_of_a_link() -> None:
    table = stage_table_markdown(RESULTS, "sqlite:///mlflow.db", "7")
    assert "`abcdef0123456789`" in table and "http" not in table


def test_the_registry_lines_say_when_there_is_no_champion_yet() -> None:
    from tasks.platform.settings import Settings
    from tasks.platform.summary import _registry

    kept = {"registered_version": "1", "promoted": False, "champion_version": "none"}
    promoted = {"registered_version": "2", "promoted": True, "champion_version": "2"}
    lines = _registry(Settings(), {"registry": promoted}, {"registry": kept})
    assert lines == ["  book-genre-classifier: v2 promoted; @champion = v2",
                     "  book-cover-clip: v1 kept as challenger; @champion = none yet"]
