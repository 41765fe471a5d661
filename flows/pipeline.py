from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.evaluate import evaluate_flow
from flows.finetune_clip import finetune_clip_flow
from flows.generate import generate_flow
from flows.index_covers import index_covers_flow
from flows.label_covers import label_covers_flow
from flows.read_covers import read_covers_flow
from flows.runner import data_root_exists, run_flow
from flows.shard_covers import shard_covers_flow
from flows.train_classifier import train_classifier_flow
from flows.validate import validate_flow
from tasks.platform.data_versioning import UnchangedStages, dvc_record_blocker, record_outputs_in_dvc
from tasks.platform.reliability import pipeline_lock
from tasks.platform.settings import load_settings
from tasks.platform.summary import SKIPPED, record_run, render_summary, stage_table_markdown
from tasks.platform.tracking import experiment_id_or_none, tracking_uri

# (DVC stage name, its flow), in pipeline order.
STAGES = (("generate", generate_flow), ("validate", validate_flow), ("read_covers", read_covers_flow),
          ("train_classifier", train_classifier_flow),
          ("label_covers", label_covers_flow), ("shard_covers", shard_covers_flow), ("finetune_clip", finetune_clip_flow),
          ("evaluate", evaluate_flow), ("index_covers", index_covers_flow))


@flow(name="book-covers-pipeline")
def pipeline(params_file: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, object]:
    """Validate -> read covers -> classify -> label -> shard covers -> fine-tune CLIP -> evaluate -> index covers, each stage a subflow."""
    overrides = list(overrides or [])
    settings = load_settings(params_file, overrides)  # fail on a bad param before any stage runs
    settings.data.source_root()  # ...and on a data.root that does not exist
    runtime, fallback = settings.runtime, settings.data.uses_fallback()
    with pipeline_lock(runtime.lock_file, runtime.lock_wait_seconds):
        unchanged = UnchangedStages(dvc_record_blocker(overrides, params_file, runtime.dvc_commit_after_pipeline, fallback))
        results: dict[str, object] = {}
        for name, stage in STAGES:
            skip = unchanged.unchanged(name)
            results[stage.name] = {"skipped": SKIPPED} if skip else stage(params_file=params_file, overrides=overrides)
        results["dvc"] = record_outputs_in_dvc(overrides, params_file, runtime.dvc_commit_after_pipeline, data_root_missing=fallback)
    record_run(settings.paths.run_record, settings.data.source_label(), results)
    create_markdown_artifact(key="pipeline-summary", description="each stage's key figures and its MLflow run",
                             markdown=stage_table_markdown(results, tracking_uri(), experiment_id_or_none(settings.mlflow.experiment)))
    return results


if __name__ == "__main__":
    run_flow(pipeline, report=render_summary, check=data_root_exists)
