"""`classify-listing`: a new listing labeled by the classifier champion, no retraining.

Its own flow, not a pipeline stage: it reads a file the pipeline does not version and writes
predictions beside the project's outputs, so DVC and the run lock are not involved.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from tasks.genre.batch import classify_listing, report_markdown
from tasks.platform.settings import load_settings


@flow(name="classify-listing")
def classify_listing_flow(listing: str, output: str | None = None, params_file: str = "params.yaml",
                          overrides: list[str] | None = None) -> dict[str, object]:
    """Label a new listing (any CSV layout the readers know) with the classifier champion: genre, probability,
    model version and input row for each good row; bad rows quarantined with reasons."""
    summary = classify_listing(load_settings(params_file, overrides), listing, output)
    create_markdown_artifact(key="classify-listing", markdown=report_markdown(summary),
                             description="rows classified and quarantined, and the genres predicted")
    return summary
