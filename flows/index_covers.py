from __future__ import annotations

from prefect import flow

from flows.runner import run_flow
from tasks.platform.reliability import run_stage
from tasks.platform.settings import load_settings
from tasks.search.index import build_index


@flow(name="index-covers")
def index_covers_flow(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Embed every labeled cover with the champion CLIP: the index behind `bookcovers search` and the search page."""
    return run_stage(build_index, load_settings(params_file, overrides))


if __name__ == "__main__":
    run_flow(index_covers_flow)
