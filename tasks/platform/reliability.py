"""What keeps runs safe against each other and against passing failures.

- One run at a time: every stage holds an exclusive lock on `runtime.lock_file` while it works,
  and the pipeline holds it from the first stage to the last, so a second `make run`, a Prefect
  UI click or a `dvc repro` started meanwhile waits or stops with one clear sentence instead of
  writing the same outputs. The lock is the kernel's (flock): a killed run releases it at once.
- Passing failures: a stage task that fails on a transient I/O or network error is retried by
  Prefect with exponential backoff (visible in the UI as a retrying task run); an error the user
  must fix (a UserError) is never retried.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.tasks import exponential_backoff

from tasks.platform.errors import UserError
from tasks.platform.settings import RuntimeSettings, Settings

log = logging.getLogger(__name__)

TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ESTALE, errno.ETIMEDOUT,
                              errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ENETUNREACH, errno.EHOSTUNREACH})


class PipelineBusyError(UserError, RuntimeError):
    """Another run of this project holds the lock."""


def _holder(handle: Any) -> dict[str, object]:
    handle.seek(0)
    try:
        return json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return {}


@contextmanager
def pipeline_lock(path: Path, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the project's run lock; reentrant within one process (the pipeline and its stages)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115  held for the whole block
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(handle)
                if holder.get("pid") == os.getpid():
                    yield  # this process already holds it: a stage inside the pipeline
                    return
                if time.monotonic() >= deadline:
                    raise PipelineBusyError(
                        f"another run of this project is in progress (pid {holder.get('pid', '?')}, started "
                        f"{holder.get('started', '?')}: {holder.get('command', '?')}), holding {path}; wait for it to "
                        "finish, or set runtime.lock_wait_seconds to queue behind it") from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                 "command": " ".join(sys.argv)[:300]}))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def is_transient(error: BaseException | None) -> bool:
    """Worth another try: network and storage hiccups, and tracking-server 5xx answers."""
    if error is None or isinstance(error, UserError):
        return False
    if isinstance(error, (TimeoutError, ConnectionError)):
        return True
    if isinstance(error, OSError):
        return error.errno in TRANSIENT_ERRNOS
    from mlflow.exceptions import MlflowException  # here, not at import: engine workers load this module for the retry rule

    if isinstance(error, MlflowException):
        return error.get_http_status_code() >= 500
    return False


def retry_if_transient(task: Task, task_run: Any, state: Any) -> bool:  # noqa: ARG001  Prefect's signature
    """Prefect's retry_condition_fn: retry only when the failure was transient."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception as unreadable:  # noqa: BLE001
        error = unreadable
    transient = is_transient(error if isinstance(error, BaseException) else None)
    log.log(logging.WARNING if transient else logging.DEBUG, "%s failed with %r: %s", task.name, error,
            "transient, retrying" if transient else "not retried")
    return transient


def run_stage(stage_task: Task, settings: Settings) -> Any:
    """One stage as every entry point runs it: alone (the run lock) and retried on transient failures."""
    runtime = settings.runtime
    with pipeline_lock(runtime.lock_file, runtime.lock_wait_seconds):
        return retrying(stage_task, runtime)(settings)


def retrying(stage_task: Task, runtime: RuntimeSettings) -> Task:
    """The stage task with the project's retry policy (runtime.task_retries, exponential backoff)."""
    delays = exponential_backoff(runtime.retry_backoff_seconds)(runtime.task_retries) if runtime.task_retries else 0
    return stage_task.with_options(retries=runtime.task_retries, retry_delay_seconds=delays,
                                   retry_condition_fn=retry_if_transient)
