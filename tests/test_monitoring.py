"""The drift monitor's wiring: which batches it reads, how it samples a big classify output, and how
a drifted batch flags the Prefect run (a "Drift" state, or a failure) and may start retraining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect import flow

from tasks.monitor.monitoring import Batch, DriftDetected, flag_verdict, sampled_predictions, unreported_batches
from tasks.platform.errors import InputFileError
from tasks.platform.settings import load_settings


def predictions(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"source_row": range(2, rows + 2), "book_id": [f"b{i}" for i in range(rows)],
                         "title": [f"Title {i}" for i in range(rows)], "author": [None if i % 3 else f"A {i}" for i in range(rows)],
                         "genre": ["Travel" if i % 2 else "History" for i in range(rows)],
                         "probability": np.linspace(0.1, 0.9, rows), "model_version": 3})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_big_classify_output_is_sampled_uniformly_a_chunk_at_a_time(tmp_path: Path, suffix: str) -> None:
    frame, path = predictions(10_000), tmp_path / f"new.genres{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    sample = sampled_predictions(path, 1_000, chunk_rows=700)
    assert list(sample.columns) == ["title", "author", "genre", "probability"] and len(sample) == 1_000
    assert sample["title"].is_unique and set(sample["title"]) <= set(frame["title"])
    numbers = sample["title"].str.split().str[1].astype(int)
    assert numbers.is_monotonic_increasing  # file order kept
    assert 0.35 < (numbers < 5_000).mean() < 0.65 and numbers.max() > 9_000  # from the whole file, not its head
    assert sampled_predictions(path, 50_000, chunk_rows=700).shape == (10_000, 4)
    assert sample["author"].isna().sum() > 0 or (sample["author"] == "").sum() > 0  # missing authors stay missing


def test_a_file_that_is_not_a_classify_output_is_refused_in_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "listing.csv"
    path.write_text("title,author\nDune,Frank Herbert\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="no genre, probability column"):
        sampled_predictions(path, 10)
    with pytest.raises(InputFileError, match="not a batch to monitor"):
        Batch.at(tmp_path / "notes.txt")


def test_the_scheduled_run_reads_every_batch_without_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(tmp_path / "params.yaml")
    out, batches, reports = settings.classify.output_dir, settings.add_covers.batches_dir, settings.monitor.reports_dir
    out.mkdir(parents=True)
    for name in ("a.genres.csv", "b.genres.parquet", "a.genres.quarantine.csv", "new.covers.covers-quarantine.csv",
                 "a.genres.summary.json"):
        (out / name).write_text("x")
    for name in ("0001-abc", "0002-def"):
        (batches / name).mkdir(parents=True)
        (batches / name / "books.parquet").write_text("x")
    reports.mkdir(parents=True)
    (reports / "listing-b.genres.drift.json").write_text("{}")
    (reports / "covers-0001-abc.drift.json").write_text("{}")
    found = unreported_batches(settings)
    assert [(b.kind, b.path.name, b.name) for b in found] == [("listing", "a.genres.csv", "listing-a.genres"),
                                                              ("covers", "0002-def", "covers-0002-def")]


def report(batch: str, drifted: list[str]) -> dict[str, object]:
    verdict = "drift: " + ", ".join(drifted) if drifted else "no drift"
    return {"batch": batch, "verdict": verdict, "drifted": drifted, "markdown": f"# {verdict}", "html": f"/tmp/{batch}.html",
            "mlflow_run_id": "r1"}


def test_a_run_is_flagged_only_at_the_threshold_of_drifted_measures(tmp_path: Path) -> None:
    reports = [report("a.csv", ["genre"]), report("b.csv", []), report("c", ["title script", "genre"])]
    settings = load_settings(tmp_path / "params.yaml")
    assert flag_verdict(reports, settings.monitor) == "a.csv: drift: genre; c: drift: title script, genre"
    two = load_settings(tmp_path / "params.yaml", ["monitor.flag_at_measures=2"])
    assert flag_verdict(reports, two.monitor) == "c: drift: title script, genre"
    assert flag_verdict([report("b.csv", [])], settings.monitor) is None


def test_drift_completes_the_run_as_drift_or_fails_it_and_can_start_retraining(prefect_harness: None, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import monitor

    started: list[str] = []
    monkeypatch.setattr(monitor, "start_retraining", lambda: started.append("pipeline") or "run-1")

    @flow
    def publishing(overrides: list[str], drifted: list[str]) -> object:
        return monitor.publish(load_settings(tmp_path / "params.yaml", overrides), [report("new.genres.csv", drifted)], {})

    quiet = publishing([], [], return_state=True)
    assert quiet.type.value == "COMPLETED" and quiet.name == "Completed" and quiet.result()["drift"] == ["new.genres.csv: no drift"]
    warned = publishing([], ["genre"], return_state=True)
    assert warned.type.value == "COMPLETED" and warned.name == "Drift" and warned.message == "new.genres.csv: drift: genre"
    assert started == []
    failed = publishing(["monitor.on_drift=fail", "monitor.retrain_on_drift=true"], ["genre"], return_state=True)
    assert failed.type.value == "FAILED" and "drift: genre" in failed.message and started == ["pipeline"]
    with pytest.raises(DriftDetected, match="monitor.on_drift=fail"):
        publishing(["monitor.on_drift=fail"], ["genre"])


def test_the_crons_schedule_the_monitor_and_retraining_deployments_and_are_off_by_default(tmp_path: Path,
                                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.deployments import deployments
    from tasks.platform.settings import SettingsError

    monkeypatch.chdir(tmp_path)
    unscheduled = {d.name: d.schedules for d in deployments(str(tmp_path / "params.yaml"))}
    assert {"monitor-drift", "add-covers", "classify-listing", "book-covers-pipeline"} <= set(unscheduled)
    assert not any(unscheduled.values())
    (tmp_path / "params.yaml").write_text("monitor:\n  monitor_cron: '0 6 * * *'\n  retrain_cron: '0 3 * * 0'\n")
    scheduled = {d.name: [s.schedule.cron for s in d.schedules] for d in deployments(str(tmp_path / "params.yaml")) if d.schedules}
    assert scheduled == {"monitor-drift": ["0 6 * * *"], "book-covers-pipeline": ["0 3 * * 0"]}
    with pytest.raises(SettingsError, match="five fields"):
        load_settings(tmp_path / "params.yaml", ["monitor.retrain_cron=daily"])


def test_the_monitor_command_takes_overrides_without_a_batch_and_names_a_missing_one(tmp_path: Path, capsys,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import bookcovers

    monkeypatch.chdir(tmp_path)
    seen: list[tuple[object, list[str]]] = []
    monkeypatch.setattr(bookcovers, "check_params", lambda args, data_root: seen.append((args.batch, args.overrides)))
    monkeypatch.setattr("flows.runner.run_flow", lambda *a, **k: {"drift": [], "reports": []})  # no flow run: parsing only
    bookcovers.main(["monitor", "monitor.on_drift=fail", "monitor.flag_at_measures=2"])
    assert "no batch without a report" in capsys.readouterr().out
    assert seen == [(None, ["monitor.on_drift=fail", "monitor.flag_at_measures=2"])]
    with pytest.raises(SystemExit) as exit_code:
        bookcovers.main(["monitor", str(tmp_path / "absent.genres.csv")])
    assert exit_code.value.code == 2 and "no such file or folder" in capsys.readouterr().err
