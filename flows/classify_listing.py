"""`classify-listing`: a new listing labeled by the classifier champion, no retraining.

Its own flow, not a pipeline stage: it reads a file the pipeline does not version and writes
predictions beside the project's outputs, so DVC and the run lock are not involved.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import State

from flows.monitor import publish
from tasks.genre.batch import classify_listing, report_markdown
from tasks.monitor.monitoring import Batch, monitor_batch
from tasks.platform.settings import load_settings


@flow(name="classify-listing")
def classify_listing_flow(listing: str, output: str | None = None, params_file: str = "params.yaml",
                          overrides: list[str] | None = None, monitor: bool = True) -> dict[str, object] | State:
    """Label a new listing (any CSV layout the readers know) with the classifier champion: genre, probability,
    model version and input row for each good row; bad rows quarantined with reasons; then its drift report."""
    settings = load_settings(params_file, overrides)
    summary = classify_listing(settings, listing, output)
    create_markdown_artifact(key="classify-listing", markdown=report_markdown(summary),
                             description="rows classified and quarantined, and the genres predicted")
    if not monitor or not summary["rows_classified"]:
        return summary
    return publish(settings, [monitor_batch(settings, Batch.at(summary["output"]))], summary)
