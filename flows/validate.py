from __future__ import annotations

from prefect import flow

from flows.cli import run_flow
from tasks.reliability import run_stage
from tasks.settings import load_settings
from tasks.validation import validate_and_clean


@flow(name="validate-clean")
def validate_flow(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Validate the listing and covers with Great Expectations; write clean Parquet and the quarantine."""
    return run_stage(validate_and_clean, load_settings(params_file, overrides))


if __name__ == "__main__":
    run_flow(validate_flow)
