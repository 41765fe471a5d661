"""`monitor-drift`: drift reports of new batches against the champions' reference, and the run flagged when they drift.

Given a batch (a `bookcovers classify` output or an add-covers batch folder) it reports on that
one; without one (the scheduled run) on every batch that has no report yet. `publish` is shared
with classify-listing and add-covers, which report on the batch they just made.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.states import Completed, State

from tasks.monitor.monitoring import Batch, DriftDetected, flag_verdict, monitor_batch, start_retraining, unreported_batches
from tasks.platform.settings import Settings, load_settings


def publish(settings: Settings, reports: list[dict[str, object]], result: dict[str, object]) -> dict[str, object] | State:
    """Each report as Prefect artifacts; a flagged run completes as "Drift" (warn) or fails (fail), and may retrain."""
    for report in reports:
        create_markdown_artifact(key="drift-report", description=str(report["verdict"]),
                                 markdown=f"{report['markdown']}\n\nFull report: `{report['html']}` "
                                          f"(also an artefact of MLflow run `{report['mlflow_run_id']}`)\n")
        create_link_artifact(key="drift-report-html", link=Path(str(report["html"])).as_uri(), link_text=str(report["verdict"]))
    result["drift"] = [f"{Path(str(r['batch'])).name}: {r['verdict']}" for r in reports]
    verdict = flag_verdict(reports, settings.monitor)
    if verdict is None:
        return result
    if settings.monitor.retrain_on_drift:
        result["retraining_flow_run"] = start_retraining()
    if settings.monitor.on_drift == "fail":
        raise DriftDetected(f"{verdict} (monitor.on_drift=fail); the reports are in {settings.monitor.reports_dir}")
    return Completed(name="Drift", message=verdict, data=result)


@flow(name="monitor-drift")
def monitor_flow(batch: str | None = None, params_file: str = "params.yaml",
                 overrides: list[str] | None = None) -> dict[str, object] | State:
    """Drift of a new batch (or of every unreported one) against the champions' reference: HTML report, verdict, flag."""
    settings = load_settings(params_file, overrides)
    batches = [Batch.at(batch)] if batch else unreported_batches(settings)
    reports = [monitor_batch(settings, one) for one in batches]
    return publish(settings, reports, {"batches": [str(b.path) for b in batches],
                                       "reports": [r["html"] for r in reports]})
