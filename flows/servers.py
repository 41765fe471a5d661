"""Where the servers `make ui` started for this project folder answer (`.ui/servers.json`), so runs
started from the shell go to them while they are up. Stdlib only: every stage's entry point reads it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

UI_DIR = Path(".ui")
SERVERS_FILE = UI_DIR / "servers.json"
OPT_OUT = "BOOKCOVERS_USE_UI_SERVERS"


def answers_health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class ProjectServers:
    prefect_api: str
    mlflow: str


def project_servers() -> ProjectServers | None:
    """The servers `make ui` started for this project folder, when they answer and nothing else was chosen."""
    if os.environ.get(OPT_OUT, "1") == "0" or "PREFECT_API_URL" in os.environ or "MLFLOW_TRACKING_URI" in os.environ:
        return None
    try:
        recorded = json.loads(SERVERS_FILE.read_text())
        servers = ProjectServers(recorded["prefect_api"], recorded["mlflow"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return servers if answers_health(f"{servers.prefect_api}/health") and answers_health(f"{servers.mlflow}/health") else None
