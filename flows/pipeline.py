"""The whole pipeline: the symbolic and audio flows as concurrent subflows, then the run report.

    python -m flows.pipeline --help
    python -m flows.pipeline --profile quick          # what `make run` does
    python -m flows.pipeline --stages data --run-audio false

Re-running with nothing changed re-uses every stage: a flow whose corpus content, parameters
and code are unchanged is not run at all (`datasets.stamps`), and inside a flow each stage keeps
content-addressed caches and stamps under `data_dir` (keyed on file sha256, parameters and code
version), so only new or changed inputs, and what depends on them, are recomputed.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from prefect import flow
from prefect.futures import PrefectFuture
from pydantic import Field

from flows.audio import AudioParams, audio_flow
from flows.cli import run_cli
from flows.params import FlowParams
from flows.runners import make_task_runner
from flows.symbolic import SymbolicParams, symbolic_flow
from tasks.pipeline import run_flow_or_reuse
from tasks.report import publish_report

PipelineStage = Literal["data", "train", "evaluate", "generate", "superres"]
# The pipeline's own values of these override the same-named fields of each flow's options.
SHARED_FIELDS = tuple(FlowParams.model_fields)


class PipelineParams(FlowParams):
    stages: list[PipelineStage] = Field(
        default_factory=lambda: ["data", "train", "evaluate", "generate", "superres"],
        description="Stages to run; each flow runs those it has (generate: symbolic only, "
        "superres: audio only)",
    )
    run_symbolic: bool = Field(True, description="Run the symbolic (next-note) flow")
    run_audio: bool = Field(True, description="Run the audio super-resolution flow")
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
        chosen = {
            "symbolic": (params.run_symbolic, symbolic_flow, params.symbolic),
            "audio": (params.run_audio, audio_flow, params.audio),
        }
        futures: dict[str, PrefectFuture[dict[str, Any]]] = {}
        for name, (wanted, subflow, own) in chosen.items():
            if not wanted:
                continue
            flow_params = subflow_params(shared, own)
            runner = make_task_runner(
                flow_params.task_runner, flow_params.workers, flow_params.dask_address
            )
            task = run_flow_or_reuse.with_options(name=f"{name}-flow")
            futures[name] = task.submit(name, subflow, flow_params, runner)
            if params.launch().world_size > 1:
                # Two torchrun launches at once would share the GPUs and the rendezvous port.
                futures[name].wait()
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
