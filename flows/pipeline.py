"""The whole pipeline: the symbolic and audio flows as concurrent subflows, then the run report.

    python -m flows.pipeline --help
    python -m flows.pipeline --profile quick          # what `make run` does
    python -m flows.pipeline --stages data --run-audio false

Re-running with nothing changed re-uses every stage: a flow whose corpus content, parameters
and code are unchanged is not run at all (`flows.reuse`), and inside a flow each stage keeps
content-addressed caches and stamps under `data_dir` (keyed on file sha256, parameters and code
version), so only new or changed inputs, and what depends on them, are recomputed.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from pydantic import BaseModel, Field

from flows.audio import AudioParams, audio_flow
from flows.cli import run_cli
from flows.reuse import flow_key, project_code_version, record_result, reusable_result, stamp_dir
from flows.runners import TaskRunnerName, make_task_runner
from flows.symbolic import SymbolicParams, symbolic_flow
from tasks.report import publish_report

PipelineStage = Literal["data", "train", "evaluate", "generate", "superres"]
SHARED_FIELDS = ("data_dir", "profile", "seed", "task_runner", "workers", "dask_address")


class PipelineParams(BaseModel):
    data_dir: str = Field("data", description="Directory all outputs and caches go under")
    profile: Literal["quick", "full"] = Field(
        "quick", description="quick: small corpora and models, minutes on 2 CPU cores"
    )
    seed: int = Field(0, description="Seed of splits, initialisation and sampling")
    stages: list[PipelineStage] = Field(
        default_factory=lambda: ["data", "train", "evaluate", "generate", "superres"],
        description="Stages to run; each flow runs those it has (generate: symbolic only, "
        "superres: audio only)",
    )
    run_symbolic: bool = Field(True, description="Run the symbolic (next-note) flow")
    run_audio: bool = Field(True, description="Run the audio super-resolution flow")
    task_runner: TaskRunnerName = Field(
        "threads", description="threads: a bounded pool; dask: a LocalCluster or dask_address"
    )
    workers: int = Field(2, ge=1, description="Threads, or Dask workers of the LocalCluster")
    dask_address: str | None = Field(
        None, description="Existing Dask scheduler (tcp://host:8786); none: a local cluster"
    )
    symbolic: SymbolicParams = Field(
        default_factory=SymbolicParams,
        description="Symbolic flow options (corpus, limits, ...); the pipeline-level fields "
        "above override the same-named ones here",
    )
    audio: AudioParams = Field(
        default_factory=AudioParams,
        description="Audio flow options (corpus, ratio, ...); the pipeline-level fields "
        "above override the same-named ones here",
    )


ParamsT = typing.TypeVar("ParamsT", SymbolicParams, AudioParams)


def subflow_params(params: PipelineParams, own: ParamsT) -> ParamsT:
    """A flow's parameters: its own options, with the pipeline's shared fields and the stages
    that flow has."""
    stage_type = typing.get_args(type(own).model_fields["stages"].annotation)[0]
    known = typing.get_args(stage_type)
    shared = {name: getattr(params, name) for name in SHARED_FIELDS}
    stages = [stage for stage in params.stages if stage in known]
    return own.model_copy(update=shared | {"stages": stages})


def _run_or_reuse(name: str, subflow: Any, params: SymbolicParams | AudioParams) -> dict[str, Any]:
    """The recorded result when nothing the flow depends on changed; else run the flow with
    the chosen task runner and record its result."""
    logger = get_run_logger()
    key = flow_key(params, project_code_version())
    stamps = stamp_dir(params.data_dir, name)
    recorded = reusable_result(stamps, key)
    if recorded is not None:
        logger.info("%s: corpus, parameters and code unchanged; re-using %s", name, stamps)
        return recorded | {"flow_reused": True}
    runner = make_task_runner(params.task_runner, params.workers, params.dask_address)
    result = subflow.with_options(task_runner=runner)(params)
    result = result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result)
    record_result(stamps, key, result)
    return result | {"flow_reused": False}


# A flow called inside a task becomes a subflow of that task's run; submitting the two tasks
# lets both flows run at once. No Prefect cache: `flows.reuse` stamps live with the outputs.
@task(name="symbolic-flow", cache_policy=NO_CACHE)
def run_symbolic_task(params: SymbolicParams) -> dict[str, Any]:
    return _run_or_reuse("symbolic", symbolic_flow, params)


@task(name="audio-flow", cache_policy=NO_CACHE)
def run_audio_task(params: AudioParams) -> dict[str, Any]:
    return _run_or_reuse("audio", audio_flow, params)


@contextmanager
def shared_dask_address(params: PipelineParams) -> Iterator[str | None]:
    """The scheduler both flows use: `dask_address`, or one LocalCluster of `workers` processes
    for the whole run (not one per flow, which would double the processes)."""
    if params.task_runner != "dask" or params.dask_address:
        yield params.dask_address
        return
    from distributed import LocalCluster

    with LocalCluster(n_workers=params.workers, threads_per_worker=1) as cluster:
        yield cluster.scheduler_address


@flow(name="pipeline")
def pipeline_flow(params: PipelineParams = PipelineParams()) -> dict[str, Any]:
    """Symbolic music and audio super-resolution, end to end, with one report."""
    results: dict[str, Any] = {}
    failures: list[BaseException] = []
    with shared_dask_address(params) as address:
        shared = params.model_copy(update={"dask_address": address})
        futures: dict[str, PrefectFuture[dict[str, Any]]] = {}
        if params.run_symbolic:
            futures["symbolic"] = run_symbolic_task.submit(subflow_params(shared, params.symbolic))
        if params.run_audio:
            futures["audio"] = run_audio_task.submit(subflow_params(shared, params.audio))
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as exc:  # the other flow's outputs still get reported
                failures.append(exc)
    report = publish_report("pipeline", params.data_dir, results, params.profile, params.seed)
    if failures:
        raise failures[0]
    return {"results": results, "report": report}


def main() -> None:
    run_cli(pipeline_flow, PipelineParams, own_task_runner=False)


if __name__ == "__main__":
    main()
