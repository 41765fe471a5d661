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
    "GIT_PYTHON_REFRESH": "quiet",
}
for _name, _value in QUIET_OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
