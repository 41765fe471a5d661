"""Faults injected into real stages: a SIGKILL mid-epoch, a tracking server that is down or
goes away, a second run started at once, the same stage run twice. Each must end with no data
lost, no output corrupted and no half-registered model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_overrides

from tasks.clip.checkpoints import Checkpointer
from tasks.clip.model import clip_image_size
from tasks.clip.shards import write_shards
from tasks.genre.labeling import covers_by_book
from tasks.inputs.validation import validate_and_clean
from tasks.platform.settings import Settings, load_settings

# Long enough (30 epochs of ~7 steps) that the kill lands mid-run, small enough for seconds.
RESUMABLE = ["clip.epochs=30", "clip.checkpoint_every_steps=1", "clip.num_threads=1", "clip.batch_size=16"]


def labeled_covers(settings: Settings) -> None:
    """The fine-tuning stage's inputs (labeled covers and their shards), from the validated tiny covers with known captions."""
    validate_and_clean.fn(settings)
    books = covers_by_book(pd.read_parquet(settings.paths.clean_covers))
    books["genre"] = books["category"]
    books["caption"] = books["title"] + ", " + books["category"]
    settings.paths.labeled_covers.parent.mkdir(parents=True, exist_ok=True)
    books.to_parquet(settings.paths.labeled_covers, index=False)
    write_shards(books, settings.paths.cover_shards, clip_image_size(settings.clip))


class Stage:
    """A stage command in its own process group with its output in a file: Prefect's temporary
    server is a grandchild that may outlive a killed stage, and must neither hold a pipe open
    nor be left running."""

    def __init__(self, module: str, overrides: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.log = cwd / f"{module}-{time.monotonic_ns()}.log"
        with open(self.log, "w") as output:
            self.process = subprocess.Popen([sys.executable, "-m", module, "--params", str(cwd / "params.yaml"), *overrides],
                                            cwd=cwd, env=env or dict(os.environ), stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait(self, timeout: float = 600) -> tuple[int, str]:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.kill_group()
        return code, self.log.read_text()

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass


def finished(stage: Stage) -> str:
    code, output = stage.wait()
    assert code == 0, f"stage failed ({code}):\n{output[-5000:]}"
    return output


@pytest.mark.slow
def test_sigkill_mid_epoch_then_rerun_resumes_to_the_same_metrics(tiny_settings: Settings, tiny_data, project_dir: Path) -> None:
    overrides = [*tiny_overrides(tiny_data), *RESUMABLE]
    settings = load_settings(project_dir / "params.yaml", overrides)
    labeled_covers(settings)
    reference_paths = [f"paths.{key}={project_dir / 'reference' / key}" for key in ("clip_dir", "clip_checkpoints", "metrics_dir", "plots_dir")]
    reference_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project_dir / 'reference.db'}"}
    finished(Stage("flows.finetune_clip", [*overrides, *reference_paths], project_dir, reference_env))
    reference = json.loads((project_dir / "reference" / "metrics_dir" / "clip_train.json").read_text())

    victim = Stage("flows.finetune_clip", overrides, project_dir)
    checkpointer = Checkpointer(settings.paths.clip_checkpoints, "unused")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and victim.process.poll() is None:
        state = _any_state(checkpointer)
        if state is not None and state["global_step"] >= 20 and state["step_in_epoch"] > 0:
            break
        time.sleep(0.02)
    victim.process.send_signal(signal.SIGKILL)
    code, _ = victim.wait()
    assert code == -signal.SIGKILL, "the run ended before it could be killed; make it longer"
    assert not (settings.paths.metrics_dir / "clip_train.json").exists()

    resumed_output = finished(Stage("flows.finetune_clip", overrides, project_dir))
    assert "resuming from" in resumed_output
    resumed = json.loads((settings.paths.metrics_dir / "clip_train.json").read_text())
    assert resumed["resumed_from_step"] >= 20
    assert resumed["best_epoch"] == reference["best_epoch"]
    for got, want in zip(resumed["history"], reference["history"], strict=True):
        assert got["val_loss"] == pytest.approx(want["val_loss"], abs=1e-5)
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-5)
    from tasks.platform.tracking import client

    mlflow_client = client()
    runs = mlflow_client.search_runs([mlflow_client.get_experiment_by_name("book-covers").experiment_id],
                                     "attributes.run_name = 'fine-tune-clip'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", "the resumed run continues the killed run's MLflow run"
    assert len(mlflow_client.search_model_versions("name='book-cover-clip'")) == 1


def _any_state(checkpointer: Checkpointer) -> dict | None:
    from safetensors import safe_open

    try:
        with safe_open(str(checkpointer.latest), framework="pt") as handle:
            return json.loads(handle.metadata()["state"])
    except Exception:  # noqa: BLE001  not written yet
        return None


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_tracking_server_stops_the_stage_in_seconds(tiny_settings: Settings, tiny_data, project_dir: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}
    started = time.monotonic()
    code, err = Stage("flows.validate", tiny_overrides(tiny_data), project_dir, env).wait(timeout=120)
    assert code == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "MLflow tracking server http://127.0.0.1:" in errors[0] and "unreachable" in errors[0]
    assert "Traceback" not in err
    assert time.monotonic() - started < 60  # Prefect's start included; the check itself takes ~3 s
    assert not tiny_settings.paths.clean_listing.exists(), "nothing is written when tracking is down"
