from __future__ import annotations

from prefect import flow

from flows.runner import run_flow
from tasks.genre.labeling import label_covers
from tasks.platform.reliability import run_stage
from tasks.platform.settings import load_settings


@flow(name="label-covers")
def label_covers_flow(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Caption every cover with the genre the champion classifier predicts from its title and author."""
    return run_stage(label_covers, load_settings(params_file, overrides))


if __name__ == "__main__":
    run_flow(label_covers_flow)
