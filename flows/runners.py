"""Task runners chosen by flow parameters: bounded threads locally, Dask to scale out."""

from __future__ import annotations

from typing import Literal

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

TaskRunnerName = Literal["threads", "dask"]


def make_task_runner(
    name: TaskRunnerName = "threads", workers: int = 2, dask_address: str | None = None
) -> TaskRunner:
    """`threads`: a pool of `workers` threads. `dask`: a LocalCluster of `workers` processes,
    or the existing scheduler at `dask_address` (tcp://host:8786) when one is given."""
    if name == "threads":
        return ThreadPoolTaskRunner(max_workers=max(1, workers))
    if name == "dask":
        from prefect_dask import DaskTaskRunner

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": max(1, workers), "threads_per_worker": 1}
        )
    raise ValueError(f"unknown task runner {name!r}; expected 'threads' or 'dask'")
