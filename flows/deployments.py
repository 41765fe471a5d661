"""Serve the pipeline and each stage as Prefect deployments, so runs start from the Prefect UI.

`make ui` starts this beside a Prefect server; a run started from the UI executes here, in the
project folder, through the same flows as `make run` and `dvc repro`. Parameters (the params file
and `section.key=value` overrides) are editable in the UI's "Run" form.
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from flows.add_covers import add_covers_flow
from flows.classify_listing import classify_listing_flow
from flows.monitor import monitor_flow
from flows.pipeline import STAGES, pipeline
from tasks.platform.settings import load_settings

TAGS = ["book-covers"]
DEFAULT_PARAMETERS = {"params_file": "params.yaml", "overrides": []}


def deployments(params_file: str = "params.yaml") -> list[RunnerDeployment]:
    """Every flow as a deployment; the monitor and the pipeline (retraining) on params.yaml's monitor crons, when set."""
    crons = load_settings(params_file).monitor
    whole = pipeline.to_deployment(
        name="book-covers-pipeline", tags=[*TAGS, "pipeline"], parameters=DEFAULT_PARAMETERS, cron=crons.retrain_cron,
        description="The whole pipeline: validate, train + select the classifier, label covers, fine-tune CLIP, "
                    "evaluate, index covers. Overrides are section.key=value strings, e.g. clip.epochs=3.",
    )
    stages = [stage.to_deployment(name=stage.name, tags=[*TAGS, "stage"], parameters=DEFAULT_PARAMETERS,
                                  description=(stage.description or stage.name).strip().splitlines()[0])
              for _, stage in STAGES]
    classify = classify_listing_flow.to_deployment(
        name="classify-listing", tags=[*TAGS, "day-two"], parameters={**DEFAULT_PARAMETERS, "listing": "", "output": None},
        description="Label a new listing with the classifier champion (no retraining): give `listing`, the path of a CSV "
                    "on this machine; predictions go to classify.output_dir (or `output`), bad rows to a quarantine file.",
    )
    add = add_covers_flow.to_deployment(
        name="add-covers", tags=[*TAGS, "day-two"], parameters={**DEFAULT_PARAMETERS, "folder": ""},
        description="Add a new covers folder to the cover index (no retraining): give `folder`, a covers folder or its CSV "
                    "on this machine; labeled by the classifier champion, embedded by the index's CLIP, found by search at once.",
    )
    monitor = monitor_flow.to_deployment(
        name="monitor-drift", tags=[*TAGS, "day-two"], parameters={**DEFAULT_PARAMETERS, "batch": None}, cron=crons.monitor_cron,
        description="Drift reports of new batches against the champions' reference: give `batch` (a classify output or an "
                    "add-covers batch folder), or leave it empty to report on every batch without a report (the scheduled run).",
    )
    return [whole, *stages, classify, add, monitor]


if __name__ == "__main__":
    serve(*deployments(), limit=1)  # one run at a time: the stages share their outputs (and the run lock)
