"""`add-covers`: a new covers folder labeled, embedded and appended to the cover index, no retraining.

Its own flow, not a pipeline stage; it holds the run lock while it rewrites the index, and the
index_covers stage rebuilds the same batches (tasks/search/additions.py).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import State

from flows.monitor import publish
from tasks.monitor.monitoring import Batch, monitor_batch
from tasks.platform.settings import load_settings
from tasks.search.additions import add_covers, additions_markdown


@flow(name="add-covers")
def add_covers_flow(folder: str, params_file: str = "params.yaml", overrides: list[str] | None = None,
                    monitor: bool = True) -> dict[str, object] | State:
    """Add a covers folder (any covers format, e.g. title,author,image) to the cover index: validated, labeled by the
    classifier champion, embedded by the index's CLIP; found by search at once; then the batch's drift report."""
    settings = load_settings(params_file, overrides)
    summary = add_covers(settings, Path(folder))
    create_markdown_artifact(key="add-covers", markdown=additions_markdown(summary),
                             description="covers added to the index, quarantined, or already there")
    if not monitor or not summary["covers_indexed"]:
        return summary
    return publish(settings, [monitor_batch(settings, Batch.at(summary["folder"]))], summary)
