from __future__ import annotations

from prefect import flow

from flows.runner import run_flow
from tasks.clip.finetune import fine_tune
from tasks.platform.reliability import run_stage
from tasks.platform.settings import load_settings


@flow(name="finetune-clip")
def finetune_clip_flow(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Fine-tune CLIP on (cover, caption) pairs; keep the best epoch; register it."""
    return run_stage(fine_tune, load_settings(params_file, overrides))


if __name__ == "__main__":
    run_flow(finetune_clip_flow)
