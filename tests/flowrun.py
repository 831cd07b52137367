"""Running the flows as their users do, `python -m flows.<track> ...`, from reliability tests.

A flow process started here gets its own process group, so a kill reaches the flow and every
child it started; it talks to the session's Prefect test server (no ephemeral server to start
per run), and its module must exist in the checkout, else the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from faults import Track

REPO = Path(__file__).resolve().parent.parent
FLOW_TIMEOUT_S = 600


def require_module(relative: str) -> None:
    """Skip when a module another engineer is writing has not landed yet (not on import
    errors: a module that exists and fails to import is a failure)."""
    if not (REPO / relative).exists():
        pytest.skip(f"{relative} does not exist yet")


@pytest.fixture(scope="session")
def prefect_api_url(prefect_harness) -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def flow_env(api_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFECT_API_URL"] = api_url
    env["PYTHONPATH"] = str(REPO)
    # One thread per library: the machine is shared, and kills must land on a busy flow,
    # not on one waiting for cores.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = "1"
    return env


def flow_command(
    track: Track, corpus: Path, data_dir: Path, *extra: str, stages: Sequence[str] = ("data",)
) -> list[str]:
    """`python -m flows.<track>` on `corpus` into `data_dir`, running `stages` (data only,
    unless told otherwise)."""
    return [
        sys.executable,
        "-m",
        f"flows.{track}",
        "--corpus",
        str(corpus),
        "--data-dir",
        str(data_dir),
        "--stages",
        *stages,
        *extra,
    ]


def start_flow(command: list[str], api_url: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command,
            cwd=REPO,
            env=flow_env(api_url),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the flow's whole process group (the flow and anything it spawned)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_flow(command: list[str], api_url: str, log: Path, timeout: float = FLOW_TIMEOUT_S) -> int:
    """Run a flow to the end; a flow that hangs (e.g. on a FIFO) is killed and fails the test."""
    process = start_flow(command, api_url, log)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        pytest.fail(f"{' '.join(command)} still running after {timeout} s (hung?); log: {log}")
    finally:
        kill_group(process)


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def read_manifest(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()
