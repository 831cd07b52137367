"""The pipeline's task: one domain flow as a subflow, or its recorded result when nothing it
depends on changed (`datasets.stamps`: corpus content, parameters, the project's code)."""

from __future__ import annotations

from typing import Any

from prefect import Flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner
from pydantic import BaseModel

from datasets.io import project_code_version
from datasets.stamps import flow_key, record_result, reusable_result, stamp_dir


# A flow called inside a task becomes a subflow of that task's run, so submitting one such
# task per domain runs both flows at once. No Prefect cache: the stamps live with the outputs.
@task(name="pipeline-flow", cache_policy=NO_CACHE)
def run_flow_or_reuse(
    name: str, subflow: Flow, params: BaseModel, task_runner: TaskRunner
) -> dict[str, Any]:
    """Run `subflow(params)` with `task_runner` and record its result, unless a recorded result
    has the same key and its outputs all still exist; `flow_reused` says which."""
    logger = get_run_logger()
    key = flow_key(params, project_code_version())
    stamps = stamp_dir(params.data_dir, name)
    recorded = reusable_result(stamps, key)
    if recorded is not None:
        logger.info("%s: corpus, parameters and code unchanged; re-using %s", name, stamps)
        return recorded | {"flow_reused": True}
    result = subflow.with_options(task_runner=task_runner)(params)
    result = result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result)
    record_result(stamps, key, result)
    return result | {"flow_reused": False}
