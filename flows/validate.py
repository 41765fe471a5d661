from __future__ import annotations

import time

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.runner import data_root_exists, run_flow
from tasks.inputs.validation import validate_and_clean
from tasks.platform.reliability import run_stage
from tasks.platform.settings import load_settings


@flow(name="validate-clean")
def validate_flow(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Validate the listing and covers with Great Expectations; write clean Parquet and the quarantine."""
    settings = load_settings(params_file, overrides)
    started = time.time()
    try:
        return run_stage(validate_and_clean, settings)
    finally:  # above all when the stage stops on too much quarantined: that is when people read it
        summary = settings.paths.quarantine_summary
        if summary.is_file() and summary.stat().st_mtime >= started:
            create_markdown_artifact(key="quarantine-summary", markdown=summary.read_text(encoding="utf-8"),
                                     description="rows set aside by validation, by reason, with examples")


if __name__ == "__main__":
    run_flow(validate_flow, check=data_root_exists)
