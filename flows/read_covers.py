from __future__ import annotations

from prefect import flow

from flows.runner import run_flow
from tasks.platform.reliability import run_stage
from tasks.platform.settings import load_settings
from tasks.reading.stage import read_covers


@flow(name="read-covers")
def read_covers_flow(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Read the printed text (title, author) off every cover once: the third signal of the cover search."""
    return run_stage(read_covers, load_settings(params_file, overrides))


if __name__ == "__main__":
    run_flow(read_covers_flow)
