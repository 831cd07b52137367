"""Task runners chosen by flow parameters: bounded threads, a Dask LocalCluster, a scheduler."""

from __future__ import annotations

import os

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.runners import make_task_runner


@task(cache_policy=NO_CACHE)
def where_am_i(item: int) -> tuple[int, int, int]:
    """The item squared, the worker's pid and how many Dask workers the scheduler knows."""
    from prefect_dask import get_dask_client

    with get_dask_client() as client:
        n_workers = len(client.scheduler_info()["workers"])
    return item * item, os.getpid(), n_workers


@flow
def fan_out(items: list[int]) -> list[tuple[int, int, int]]:
    return [future.result() for future in where_am_i.map(items)]


def test_threads_are_bounded_by_workers():
    runner = make_task_runner("threads", workers=3)
    assert isinstance(runner, ThreadPoolTaskRunner)
    assert runner._max_workers == 3
    assert make_task_runner("threads", workers=0)._max_workers == 1


def test_unknown_runner_is_refused():
    with pytest.raises(ValueError, match="unknown task runner 'ray'"):
        make_task_runner("ray")  # type: ignore[arg-type]


def test_dask_local_cluster_of_two_workers(prefect_harness):
    """`dask` without an address starts a LocalCluster of `workers` processes for the run."""
    runner = make_task_runner("dask", workers=2)
    results = fan_out.with_options(task_runner=runner)(list(range(6)))
    assert [square for square, _, _ in results] == [i * i for i in range(6)]
    assert {n_workers for _, _, n_workers in results} == {2}
    assert os.getpid() not in {pid for _, pid, _ in results}


def test_dask_existing_scheduler_address(prefect_harness):
    """`dask_address` sends the tasks to a cluster someone else started (here: 2 workers)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        runner = make_task_runner("dask", workers=7, dask_address=cluster.scheduler_address)
        results = fan_out.with_options(task_runner=runner)([3, 4])
        with Client(cluster) as client:
            worker_pids = set(client.run(os.getpid).values())
    assert [square for square, _, _ in results] == [9, 16]
    assert {n_workers for _, _, n_workers in results} == {2}
    assert {pid for _, pid, _ in results} <= worker_pids
