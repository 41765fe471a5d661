from __future__ import annotations

from prefect import flow

from flows.runner import run_flow
from tasks.clip.evaluation import evaluate
from tasks.platform.reliability import run_stage
from tasks.platform.settings import load_settings


@flow(name="evaluate-clip")
def evaluate_flow(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Score base vs fine-tuned CLIP on the test books; move @champion only on improvement."""
    return run_stage(evaluate, load_settings(params_file, overrides))


if __name__ == "__main__":
    run_flow(evaluate_flow)
