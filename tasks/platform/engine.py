"""The data stages' chunked work on a Dask cluster, through Prefect's DaskTaskRunner.

Cover probing (validate), shard writing (shard_covers) and cover embedding (index_covers,
add-covers) cut their work into chunks of `engine.chunk_covers` items; each chunk is one Prefect
task run on a Dask worker, visible in the UI and retried there on a transient error. What crosses
a process boundary is small: file paths in, facts or per-item errors out. Pixels and vectors go
straight into files each worker writes at its own offset, so a worker's memory is bounded by its
chunk and the result does not depend on which worker ran what, or whether a cluster ran it at all.

Dask rather than Ray, measured on this 2-core machine through the same Prefect task runner
interface (README, "Past one machine"): a local cluster answered its first task sooner, a task
run cost about the same (~0.1 s), and it installs a tenth of what Ray does.

Work of fewer than `engine.min_chunks` chunks, and every chunk with `engine.kind: none`, runs in
this process: a local cluster takes seconds to start, which only pays off on many chunks. With
`engine.cluster_address` the work goes to an existing cluster, whose workers must have this
project installed and see the project folder and the data at the same paths (a shared filesystem).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prefect import Task
from tqdm import tqdm

from tasks.platform.errors import UserError
from tasks.platform.reliability import retrying
from tasks.platform.sections import EngineSettings
from tasks.platform.settings import RuntimeSettings

log = logging.getLogger(__name__)

IN_PROCESS = EngineSettings(kind="none")  # for library callers without settings: no cluster


class ClusterUnreachableError(UserError, ConnectionError):
    """engine.cluster_address names a scheduler that does not answer."""


def chunk_bounds(items: int, chunk: int) -> list[tuple[int, int]]:
    """[start, stop) of each chunk of `items`, in order."""
    return [(start, min(start + chunk, items)) for start in range(0, items, chunk)]


def local_worker_count(engine: EngineSettings) -> int:
    return engine.local_workers or os.cpu_count() or 1


def uses_cluster(engine: EngineSettings, chunks: int) -> bool:
    return engine.kind == "dask" and chunks >= engine.min_chunks


def describe(engine: EngineSettings, chunks: int) -> str:
    """Where `chunks` chunks of work run, in words, for logs and stage metrics."""
    if not uses_cluster(engine, chunks):
        return "in process"
    if engine.cluster_address:
        return f"dask cluster at {engine.cluster_address}"
    return f"dask local cluster, {local_worker_count(engine)} workers"


def _prefect_api_url() -> str | None:
    """The Prefect API this process reports to (a temporary local server included), so workers report
    their task runs to the same one instead of each starting its own (first task 10.7 s instead of 3.1 s, measured)."""
    from prefect.client.orchestration import get_client

    try:
        return str(get_client(sync_client=True).api_url)
    except (RuntimeError, ValueError) as error:
        log.debug("no Prefect API to hand to the workers: %s", error)
        return None


def local_cluster_options(workers: int) -> dict[str, Any]:
    """A local Dask cluster of `workers` single-threaded processes whose task runs report to this run's Prefect API.

    Dask's sampling profiler is off in the workers: it took ~20 % of a worker's time decoding covers
    (measured: 2,000 covers in 1.23 s with it, 1.01 s without, 1.01-1.07 s in one plain process).
    """
    api_url = _prefect_api_url()
    env = {"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False", **({"PREFECT_API_URL": api_url} if api_url else {})}
    return {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0",
            "silence_logs": logging.WARNING, "env": env}


@contextmanager
def glibc_malloc_defaults() -> Iterator[None]:
    """Local workers started inside keep glibc's own malloc tuning.

    Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in their workers, so that freed memory goes back to
    the OS at once. Setting it also freezes glibc's adaptive mmap threshold, and every decoded cover's
    buffers are then mapped and unmapped: a worker decoded 1,000 real covers at 224 px in 0.79 s with it,
    0.63 s without, 0.61-0.62 s in a plain process (a /tmp scratch script). A value set in the
    environment still applies; a cluster of your own keeps its own configuration.
    """
    import dask
    import distributed  # noqa: F401  loads distributed's config defaults first: leaving config.set would otherwise drop them

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        yield


def task_runner(engine: EngineSettings) -> Any:
    """Prefect's DaskTaskRunner on `engine.cluster_address`, or on a local cluster started for this work."""
    from prefect_dask import DaskTaskRunner

    if engine.cluster_address:
        return DaskTaskRunner(address=engine.cluster_address)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the local scheduler runs here: its start-up chatter is not news
    return DaskTaskRunner(cluster_kwargs=local_cluster_options(local_worker_count(engine)))


@contextmanager
def _running(engine: EngineSettings) -> Iterator[Any]:
    """The task runner, entered and connected: its client, created on first use, reaches the scheduler
    (or starts the local cluster) here, so a scheduler that does not answer is told apart from a failed chunk."""
    with glibc_malloc_defaults(), task_runner(engine) as runner:
        try:
            runner.client  # noqa: B018  the property connects
        except OSError as error:  # distributed's answer to a scheduler it cannot reach (after its connect timeout)
            raise ClusterUnreachableError(
                f"the Dask scheduler at engine.cluster_address={engine.cluster_address} does not answer ({error}); "
                "start it, fix the address, or run without a cluster: engine.kind=none") from error
        yield runner


def iter_chunks(work: Task, chunks: Sequence[dict[str, Any]], engine: EngineSettings, desc: str,
                runtime: RuntimeSettings | None = None) -> Iterator[Any]:
    """`work(**chunk)` for every chunk, yielded in chunk order: on the engine's cluster, or here.

    Each result is let go once yielded, so a caller that writes results as they come (the index's
    vectors) holds one chunk's, not all of them.
    """
    where = describe(engine, len(chunks))
    log.info("%s: %d chunks %s", desc, len(chunks), where)
    progress = tqdm(total=len(chunks), desc=desc, unit="chunk", disable=len(chunks) < 2)
    with progress:
        if not uses_cluster(engine, len(chunks)):
            for chunk in chunks:
                result = work.fn(**chunk)
                progress.update()
                yield result
            return
        chunk_task = retrying(work, runtime or RuntimeSettings())
        with _running(engine) as runner:
            futures: list[Any] = [runner.submit(chunk_task, parameters=dict(chunk)) for chunk in chunks]
            for number in range(len(futures)):
                result = futures[number].result()
                futures[number] = None  # the worker may drop its copy
                progress.update()
                yield result


def map_chunks(work: Task, chunks: Sequence[dict[str, Any]], engine: EngineSettings, desc: str,
               runtime: RuntimeSettings | None = None) -> list[Any]:
    """`work(**chunk)` for every chunk, results in chunk order: on the engine's cluster, or here."""
    return list(iter_chunks(work, chunks, engine, desc, runtime))
