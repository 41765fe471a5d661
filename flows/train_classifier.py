from __future__ import annotations

from prefect import flow

from flows.runner import run_flow
from tasks.genre.training import train_and_select
from tasks.platform.reliability import run_stage
from tasks.platform.settings import load_settings


@flow(name="train-classifier")
def train_classifier_flow(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Cross-validate the title -> genre candidates, register the best, promote it if it beats the champion."""
    return run_stage(train_and_select, load_settings(params_file, overrides))


if __name__ == "__main__":
    run_flow(train_classifier_flow)
