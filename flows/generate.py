from __future__ import annotations

from prefect import flow

from flows.runner import run_flow
from tasks.inputs.synthetic import generate_embedded_data
from tasks.platform.reliability import run_stage
from tasks.platform.settings import load_settings


@flow(name="generate-embedded-data")
def generate_flow(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Write the embedded default listing and covers (data/raw/generated)."""
    return run_stage(generate_embedded_data, load_settings(params_file, overrides))


if __name__ == "__main__":
    run_flow(generate_flow)
