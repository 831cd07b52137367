"""End to end, as a user runs it: a real `prefect server start` (SQLite, temporary PREFECT_HOME),
the process work pool, `prefect deploy --all` from prefect.yaml, the server's scheduler creating
the nightly runs, a worker, one deployment run on a tiny corpus, checks through the API, then
the run and its artifacts in headless Chromium.

Every process the test starts (server, worker, browser) runs in its own process group and is
stopped by the fixture, also when an assertion fails. Runs are judged by their API state and
artifacts, never by grepping logs.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pipeline_corpus import write_corpora
from prefect_stack import REPO_ROOT, PrefectStack, chromium, listening_addresses

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        shutil.which("chromium") is None, reason="needs Debian's chromium (make setup-test)"
    ),
]
POOL = "genaudio-pool"
DEPLOYMENTS = {"pipeline", "pipeline-quick", "symbolic", "audio"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    with PrefectStack(tmp_path_factory.mktemp("e2e")) as running:
        running.start_server()
        yield running
    assert running.alive() == []


@pytest.fixture(scope="module")
def deployed(stack: PrefectStack) -> dict[str, dict]:
    """The pool and every deployment of prefect.yaml, as `prefect deploy --all` makes them."""
    prefect_yaml = (REPO_ROOT / "prefect.yaml").read_bytes()
    stack.cli("work-pool", "create", POOL, "--type", "process")
    stack.cli("deploy", "--all")
    assert (REPO_ROOT / "prefect.yaml").read_bytes() == prefect_yaml, "deploy rewrote prefect.yaml"
    return {d["name"]: d for d in stack.api("POST", "/deployments/filter", {})}


def run_parameters(tmp_path: Path) -> dict:
    """The `pipeline` deployment's parameters, pointed at a tiny corpus (a flow-run override)."""
    midi, wav = write_corpora(tmp_path / "corpus", n_pieces=3)
    return {
        "params": {
            "data_dir": str(tmp_path / "data"),
            "profile": "quick",
            "stages": ["data"],
            "symbolic": {"corpus": str(midi)},
            "audio": {"corpus": str(wav), "patch": 4096},
        }
    }


def test_server_binds_loopback_by_default(stack: PrefectStack):
    """`prefect server start` without --host must not be reachable from other machines."""
    assert stack.host is None
    assert listening_addresses(stack.port) == {"127.0.0.1"}


def test_deployments_match_prefect_yaml(deployed: dict[str, dict]):
    assert set(deployed) == DEPLOYMENTS
    assert all(d["work_pool_name"] == POOL for d in deployed.values())
    nightly = deployed["pipeline"]["schedules"]
    assert [(s["schedule"]["cron"], s["active"]) for s in nightly] == [("0 2 * * *", True)]
    schema = deployed["pipeline"]["parameter_openapi_schema"]
    form = schema["definitions"]["PipelineParams"]["properties"]
    assert {"profile", "stages", "task_runner", "symbolic", "audio"} <= set(form)
    assert {"SymbolicParams", "AudioParams"} <= set(schema["definitions"])
    pull = deployed["pipeline"]["pull_steps"][0]
    step = pull["prefect.deployments.steps.set_working_directory"]
    assert Path(step["directory"]) == REPO_ROOT


def test_scheduler_creates_the_nightly_runs(stack: PrefectStack, deployed: dict[str, dict]):
    """The server's scheduler, not only the cron string: after `prefect deploy --all` the active
    nightly schedule gets its next runs (Prefect schedules at least 3 ahead), the inactive ones
    none, and the server logs no traceback (SQLAlchemy 2.1 made every scheduler loop fail)."""
    nightly = deployed["pipeline"]
    runs = stack.wait_for_scheduled_runs(nightly["id"], count=3)
    tracebacks = stack.tracebacks("server")
    assert not tracebacks, tracebacks[0]
    starts = sorted(run["expected_start_time"] for run in runs)
    assert len(starts) >= 3, stack.log_tail("server")
    assert all(start.endswith("T02:00:00Z") for start in starts), starts
    assert len(set(starts)) == len(starts), "the scheduler made two runs for one time"
    for name in DEPLOYMENTS - {"pipeline"}:
        assert stack.flow_runs(deployed[name]["id"], ["SCHEDULED"]) == [], name
    # Paused as docs/DEPLOY.md says: its scheduled runs go, so the worker below can never pick
    # up a full-profile run.
    (schedule,) = nightly["schedules"]
    stack.cli("deployment", "schedule", "pause", "pipeline/pipeline", schedule["id"])
    assert stack.flow_runs(nightly["id"], ["SCHEDULED"]) == []


def test_deploy_run_through_worker_and_see_it_in_the_ui(
    stack: PrefectStack, deployed: dict[str, dict], tmp_path: Path
):
    stack.start_worker(POOL)
    flow_run_id = stack.run_deployment("pipeline", "pipeline", run_parameters(tmp_path))
    run = stack.wait_for_flow_run(flow_run_id, timeout=600)
    assert run["state_type"] == "COMPLETED", stack.log_tail("worker")
    subflows = stack.descendant_flow_runs(flow_run_id)
    assert sorted((r["flow_name"], r["state_type"]) for r in subflows) == [
        ("audio", "COMPLETED"),
        ("symbolic", "COMPLETED"),
    ]

    assert (tmp_path / "data" / "symbolic" / "manifest.parquet").is_file()
    assert (tmp_path / "data" / "audio" / "manifest.parquet").is_file()

    artifacts = {a["key"]: a for a in stack.artifacts(flow_run_id) if a["key"]}
    assert {"pipeline-report", "pipeline-metrics", "pipeline-rejected"} <= set(artifacts)
    rejected = str(artifacts["pipeline-rejected"]["data"])
    assert "broken.mid" in rejected
    assert "broken.wav" in rejected

    page = chromium(
        f"{stack.url}/v2/runs/flow-run/{flow_run_id}?tab=Artifacts",
        screenshot=tmp_path / "flow-run.png",
    )
    assert run["name"] in page
    assert "Completed" in page
    for key in ("pipeline-report", "pipeline-metrics", "pipeline-rejected"):
        assert key in page

    # The report embeds the audio stage's signal plot as a data URI: the browser shows it.
    report = chromium(
        f"{stack.url}/artifacts/artifact/{artifacts['pipeline-report']['id']}",
        screenshot=tmp_path / "report.png",
    )
    assert "pipeline run report" in report
    assert "broken.mid" in report
    assert "broken.wav" in report
    assert "reports/audio_signals.png" in report
    assert re.search(r'<img[^>]+src="data:image/png;base64,', report)
