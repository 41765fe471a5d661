"""The command line every flow shares: `python -m flows.<stage> [--params FILE] [section.key=value ...]`.

Known failures (bad params, unusable input, too much quarantined, a model that can't load)
end with one line naming the problem and the fix, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tasks.platform.errors import UserError
from tasks.platform.local_store import follow_project_folder
from tasks.platform.settings import DEFAULT_PARAMS_FILE, Settings, SettingsError, load_settings
from tasks.platform.tracking import tracking_uri

USER_ERRORS = (SettingsError, UserError)


class UserErrorsWithoutTraceback(logging.Filter):
    """A user error is explained by its message; a traceback would only hide the fix behind noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], USER_ERRORS):
            record.exc_info = None
            record.exc_text = None
        return True


def parse_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default=str(DEFAULT_PARAMS_FILE), help="params file (default: params.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="override any param, e.g. clip.epochs=2")
    return parser.parse_args(argv)


def data_root_exists(settings: Settings) -> None:
    """A data.root that the user set and that does not exist is a typo: stop before anything runs."""
    settings.data.source_root()


@contextmanager
def project_servers_if_up() -> Iterator[None]:
    """Send this run to the servers `make ui` started, when they are up, so their UIs show it; else Prefect's
    temporary server and the project's mlflow.db, as before."""
    from flows.servers import OPT_OUT, project_servers

    servers = project_servers()
    if servers is None:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    print(f"runs go to the project's servers (make ui): Prefect {servers.prefect_api}, MLflow {servers.mlflow}; "
          f"{OPT_OUT}=0 keeps them out", file=sys.stderr)
    os.environ["MLFLOW_TRACKING_URI"] = servers.mlflow
    try:
        with temporary_settings(updates={PREFECT_API_URL: servers.prefect_api}):
            yield
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def run_flow(flow: Callable[..., Any], argv: list[str] | None = None, report: Callable[[Settings], str] | None = None,
             check: Callable[[Settings], object] | None = None, arguments: dict[str, object] | None = None) -> Any:
    """Run `flow` from the command line and print `report` after it; exit 2 with one clear line on a user error.

    `check` runs on the settings before the flow starts (and before Prefect's server does), so a
    mistake it finds costs seconds, not a flow run. `arguments` are the flow's own parameters, beside the params.
    """
    # Prefect routes the `tasks` loggers to its console and UI (PREFECT_LOGGING_EXTRA_LOGGERS) but leaves
    # them at the root's WARNING level; the stages' progress is INFO.
    logging.getLogger("tasks").setLevel(logging.INFO)
    for engine_logger in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(engine_logger).addFilter(UserErrorsWithoutTraceback())
    args = parse_args(argv, getattr(flow, "description", None))
    try:
        settings = load_settings(args.params, args.overrides)  # a bad param fails here, before a flow run exists
        if check is not None:
            check(settings)
        with project_servers_if_up():
            follow_project_folder(tracking_uri())  # a copied or moved project reads and writes its own artefacts
            result = flow(params_file=args.params, overrides=args.overrides, **(arguments or {}))
        if report is not None:
            print(report(load_settings(args.params, args.overrides)))
        return result
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
