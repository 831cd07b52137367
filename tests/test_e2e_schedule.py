"""Scheduled runs really happen: a real server's scheduler and a real process worker run a
short-interval schedule until 10 consecutive scheduled runs have completed, none lost and none
run twice.

The deployed flow is a heartbeat (it writes one file named after its run): the scheduler and
the worker are what is under test, and a pipeline run would take minutes per slot.
"""

from __future__ import annotations

import itertools
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest
from prefect_stack import PrefectStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]
INTERVAL_SECONDS = 10
RUNS = 10

HEARTBEAT_FLOW = '''
import os
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run


@flow(name="heartbeat")
def heartbeat(out_dir: str) -> str:
    """One file per run, named after the run: a run executed twice would show up as a clash."""
    path = Path(out_dir) / f"{flow_run.id}.txt"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(flow_run.scheduled_start_time.isoformat())
    os.replace(tmp, path)
    return str(path)
'''

PREFECT_YAML = """
name: heartbeat
prefect-version: 3.8.8
build:
  - prefect.deployments.steps.run_shell_script:
      id: checkout
      script: pwd
      stream_output: false
push: null
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: "{{{{ checkout.stdout }}}}"
deployments:
  - name: every-{interval}s
    entrypoint: heartbeat.py:heartbeat
    work_pool:
      name: heartbeat-pool
    parameters:
      out_dir: {out_dir}
    schedules:
      - interval: {interval}
        active: true
"""


def test_short_interval_schedule_runs_every_slot_once(tmp_path: Path):
    project, out_dir = tmp_path / "project", tmp_path / "beats"
    project.mkdir()
    out_dir.mkdir()
    (project / "heartbeat.py").write_text(textwrap.dedent(HEARTBEAT_FLOW))
    (project / "prefect.yaml").write_text(
        PREFECT_YAML.format(interval=INTERVAL_SECONDS, out_dir=out_dir)
    )
    with PrefectStack(tmp_path / "stack") as stack:
        stack.start_server()
        stack.cli("work-pool", "create", "heartbeat-pool", "--type", "process")
        stack.cli("deploy", "--all", cwd=project)
        (deployment,) = stack.api("POST", "/deployments/filter", {})
        stack.start_worker("heartbeat-pool")
        completed = wait_for_consecutive_completed(stack, deployment["id"], RUNS, timeout=600)
        tracebacks = stack.tracebacks("server")
        assert not tracebacks, tracebacks[0]
        every_run = stack.flow_runs(deployment["id"])

    starts = [parse_time(run["expected_start_time"]) for run in completed]
    gaps = {(b - a).total_seconds() for a, b in itertools.pairwise(starts)}
    assert gaps == {INTERVAL_SECONDS}, f"a slot was lost: {starts}"
    all_starts = [run["expected_start_time"] for run in every_run]
    assert len(all_starts) == len(set(all_starts)), "two runs for one slot"
    assert all(run["auto_scheduled"] for run in completed)
    beats = {path.stem: path.read_text() for path in out_dir.glob("*.txt")}
    for run in completed:
        assert run["id"] in beats, f"run {run['id']} completed without running the flow"
        assert parse_time(beats[run["id"]]) == parse_time(run["expected_start_time"])
    assert len(beats) == len({run["id"] for run in every_run if run["id"] in beats})


def wait_for_consecutive_completed(
    stack: PrefectStack, deployment_id: str, count: int, timeout: float
) -> list[dict]:
    """The first `count` scheduled slots, once every one of them has completed; fails if a
    slot ends in any other final state or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = sorted(stack.flow_runs(deployment_id), key=lambda run: run["expected_start_time"])
        first = runs[:count]
        failed = [r for r in first if r["state_type"] in {"FAILED", "CRASHED", "CANCELLED"}]
        assert not failed, f"{failed[0]['state_name']}: {stack.log_tail('worker')}"
        if len(first) == count and all(r["state_type"] == "COMPLETED" for r in first):
            return first
        time.sleep(2.0)
    raise TimeoutError(
        f"{count} scheduled runs not completed in {timeout}s:\n{stack.log_tail('worker')}"
    )


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
