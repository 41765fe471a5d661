"""The project's own MLflow store (`sqlite:///mlflow.db` + `./mlruns`) follows the project folder.

MLflow writes absolute artefact paths into its database (each experiment's artefact location,
each run's artefact URI, each logged model's and model version's storage location). A project
that is copied, moved or restored from a backup would then read and write the *old* folder's
artefacts, or fail where that folder is gone. So before a run uses the local store, paths that
point into another folder's `mlruns/` are rewritten to this folder's `mlruns/`, in this folder's
database only: the original is never read or written.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger(__name__)

ARTIFACT_DIR = "mlruns"
# Every column where MLflow 3's sqlite schema keeps an artefact location.
ARTIFACT_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                    ("logged_models", "artifact_location"), ("model_versions", "storage_location"))


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///relative` or `sqlite:////absolute` tracking URI, else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


def artifact_root(location: str) -> str | None:
    """`/old/project/mlruns` for `/old/project/mlruns/3/...` (or its file:// form); None for other stores."""
    path = location.removeprefix("file://")
    marker = f"/{ARTIFACT_DIR}/"
    if marker in path + "/":
        return (path + "/").split(marker)[0] + f"/{ARTIFACT_DIR}"
    return None


def follow_project_folder(uri: str) -> int:
    """Point the local store's artefact paths at the `mlruns/` beside its database; the number of values changed."""
    database = sqlite_file(uri)
    if database is None or not database.is_file():
        return 0
    here = database.resolve().parent / ARTIFACT_DIR
    if not here.is_dir():
        return 0
    with sqlite3.connect(database) as connection:
        try:
            locations = [row[0] for row in connection.execute("SELECT artifact_location FROM experiments")]
        except sqlite3.OperationalError:  # not an MLflow database (yet)
            return 0
        elsewhere = {root for location in locations if (root := artifact_root(location or "")) and root != str(here)}
        changed = sum(_rewrite(connection, old, str(here)) for old in sorted(elsewhere) if not _same_folder(old, here))
    if changed:
        log.warning("this project's MLflow store was made in %s; %d artefact paths now point into %s",
                    ", ".join(sorted(elsewhere)), changed, here)
    return changed


def _same_folder(path: str, here: Path) -> bool:
    try:
        return Path(path).resolve() == here
    except OSError:
        return False


def _rewrite(connection: sqlite3.Connection, old: str, new: str) -> int:
    changed = 0
    for table, column in ARTIFACT_COLUMNS:
        for prefix in ("", "file://"):
            try:
                changed += connection.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",  # noqa: S608  fixed names
                    (f"{prefix}{new}/", len(f"{prefix}{old}/") + 1, len(f"{prefix}{old}/"), f"{prefix}{old}/")).rowcount
            except sqlite3.OperationalError:  # a table this MLflow version does not have
                break
    return changed
