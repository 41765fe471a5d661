"""One run at a time (the run lock) and retries of transient failures (Prefect)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_overrides
from mlflow.exceptions import MlflowException
from prefect import flow, task
from test_faults import Stage

from tasks.platform.errors import DataQualityError
from tasks.platform.reliability import PipelineBusyError, is_transient, pipeline_lock, retrying
from tasks.platform.settings import RuntimeSettings, load_settings

HOLD = "import sys, time; from tasks.platform.reliability import pipeline_lock\nwith pipeline_lock(sys.argv[1]):\n print('held', flush=True); time.sleep(float(sys.argv[2]))"


def holder(lock: Path, seconds: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_stops_with_a_clear_message_naming_the_first(tmp_path: Path) -> None:
    lock = tmp_path / ".pipeline.lock"
    first = holder(lock, 30)
    try:
        with pytest.raises(PipelineBusyError, match=rf"in progress \(pid {first.pid}, started .*\), holding .*pipeline.lock; wait"):
            with pipeline_lock(lock):
                pass
    finally:
        first.kill()
        first.wait()


def test_a_second_run_can_queue_behind_the_first(tmp_path: Path) -> None:
    lock = tmp_path / ".pipeline.lock"
    first = holder(lock, 1.5)
    started = time.monotonic()
    with pipeline_lock(lock, wait_seconds=60):
        waited = time.monotonic() - started
    assert 1.0 <= waited < 30, "granted while the first run still held it, or not soon after it let go"
    first.wait()


def test_a_killed_run_releases_the_lock_at_once(tmp_path: Path) -> None:
    lock = tmp_path / ".pipeline.lock"
    first = holder(lock, 60)
    first.send_signal(signal.SIGKILL)
    first.wait()
    with pipeline_lock(lock):  # no stale lock to clean up by hand
        pass


def test_the_pipeline_and_its_stages_share_one_lock_in_one_process(tmp_path: Path) -> None:
    lock = tmp_path / ".pipeline.lock"
    with pipeline_lock(lock), pipeline_lock(lock):
        assert str(os.getpid()) in lock.read_text()
    assert lock.read_text() == ""


@pytest.mark.slow
def test_a_run_started_while_the_pipeline_runs_stops_clearly_and_the_pipeline_finishes_intact(
        tiny_settings, tiny_data, project_dir: Path) -> None:
    overrides = [*tiny_overrides(tiny_data), "clip.epochs=1"]
    pipeline = Stage("flows.pipeline", overrides, project_dir)
    lock = project_dir / ".pipeline.lock"
    deadline = time.monotonic() + 120
    while f'"pid": {pipeline.process.pid}' not in (lock.read_text() if lock.exists() else ""):
        assert time.monotonic() < deadline and pipeline.process.poll() is None, "the pipeline never took the lock"
        time.sleep(0.1)
    refused, message = Stage("flows.validate", overrides, project_dir).wait(timeout=300)
    assert refused == 2, message[-3000:]
    assert f"another run of this project is in progress (pid {pipeline.process.pid}" in message and "Traceback" not in message
    finished, output = pipeline.wait(timeout=900)
    assert finished == 0, output[-3000:]
    paths = load_settings(project_dir / "params.yaml", overrides).paths
    listing, quarantine = pd.read_parquet(paths.clean_listing), pd.read_parquet(paths.quarantine)
    assert len(listing) + (quarantine["table"] == "listing").sum() == tiny_data.listing_rows
    assert (paths.cover_index / "index.json").is_file()


@pytest.mark.parametrize("error, transient", [
    (OSError(errno.EIO, "I/O error"), True),
    (OSError(errno.ESTALE, "stale NFS handle"), True),
    (TimeoutError("read timed out"), True),
    (ConnectionResetError("reset by peer"), True),
    (MlflowException("bad gateway", error_code="TEMPORARILY_UNAVAILABLE"), True),
    (FileNotFoundError(errno.ENOENT, "gone"), False),
    (DataQualityError("too much quarantined"), False),
    (ValueError("a bug"), False),
    (None, False),
])
def test_only_transient_failures_are_retried(error: BaseException | None, transient: bool) -> None:
    assert is_transient(error) is transient


def test_prefect_retries_a_transient_failure_and_not_a_user_error(prefect_harness: None) -> None:
    attempts: list[str] = []

    @task(name="flaky")
    def flaky(kind: str) -> str:
        attempts.append(kind)
        if kind == "io" and attempts.count("io") == 1:
            raise OSError(errno.EIO, "I/O error on the shared volume")
        if kind == "user":
            raise DataQualityError("fix your data")
        return "done"

    runtime = RuntimeSettings(task_retries=2, retry_backoff_seconds=0.1)

    @flow
    def both() -> tuple[str, str]:
        recovered = retrying(flaky, runtime)("io")
        refused = retrying(flaky, runtime)("user", return_state=True)
        return recovered, type(refused.result(raise_on_failure=False)).__name__

    assert both() == ("done", "DataQualityError")
    assert attempts.count("io") == 2 and attempts.count("user") == 1
