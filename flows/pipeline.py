from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.evaluate import evaluate_flow
from flows.finetune_clip import finetune_clip_flow
from flows.generate import generate_flow
from flows.index_covers import index_covers_flow
from flows.label_covers import label_covers_flow
from flows.runner import run_flow
from flows.shard_covers import shard_covers_flow
from flows.train_classifier import train_classifier_flow
from flows.validate import validate_flow
from tasks.platform.data_versioning import record_outputs_in_dvc
from tasks.platform.reliability import pipeline_lock
from tasks.platform.settings import load_settings
from tasks.platform.summary import render_summary, stage_table_markdown
from tasks.platform.tracking import experiment_id_or_none, tracking_uri

STAGES = (generate_flow, validate_flow, train_classifier_flow, label_covers_flow, shard_covers_flow, finetune_clip_flow,
          evaluate_flow, index_covers_flow)


@flow(name="book-covers-pipeline")
def pipeline(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Validate -> classify -> label -> shard covers -> fine-tune CLIP -> evaluate -> index covers, each stage a subflow."""
    overrides = list(overrides or [])
    settings = load_settings(params_file, overrides)  # fail on a bad param before any stage runs
    with pipeline_lock(settings.runtime.lock_file, settings.runtime.lock_wait_seconds):
        results = {stage.name: stage(params_file=params_file, overrides=overrides) for stage in STAGES}
        results["dvc"] = record_outputs_in_dvc(overrides, params_file, settings.runtime.dvc_commit_after_pipeline,
                                               data_root_missing=settings.data.uses_fallback())
    create_markdown_artifact(key="pipeline-summary", description="each stage's key figures and its MLflow run",
                             markdown=stage_table_markdown(results, tracking_uri(), experiment_id_or_none(settings.mlflow.experiment)))
    return results


if __name__ == "__main__":
    run_flow(pipeline, report=render_summary)
