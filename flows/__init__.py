"""Prefect flows: one per pipeline stage plus `pipeline`, which chains them. Wiring only.

The project runs quiet and offline unless the caller's environment says otherwise; these
defaults must be in place before Prefect, MLflow or Hugging Face read their settings, which
they do when first imported, hence here, at the entry point package.
"""

import os

QUIET_OFFLINE_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks",
    # Commands that are not flows (bookcovers experiments, search) log through the same loggers: to the console only.
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "GIT_PYTHON_REFRESH": "quiet",
    # A tracking server that goes away mid-stage fails the stage in ~10 s instead of MLflow's
    # default of 7 retries with a doubling backoff (minutes); Prefect's task retries take over.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
for _name, _value in QUIET_OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
