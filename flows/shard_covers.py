from __future__ import annotations

from prefect import flow

from flows.runner import run_flow
from tasks.clip.shards import shard_covers
from tasks.platform.reliability import run_stage
from tasks.platform.settings import load_settings


@flow(name="shard-covers")
def shard_covers_flow(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Decode every labeled cover once into uint8 shards at the CLIP's resolution: what training reads."""
    return run_stage(shard_covers, load_settings(params_file, overrides))


if __name__ == "__main__":
    run_flow(shard_covers_flow)
