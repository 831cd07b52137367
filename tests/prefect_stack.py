"""A real Prefect server, work pool, worker and headless Chromium for end-to-end tests.

Every process starts in its own session (process group) and `PrefectStack.stop` ends each group,
TERM first and KILL after a grace period, so a failing test leaves nothing running. Runs are
judged through the API (state types, artifacts), never by grepping logs: Prefect prints harmless
`ERROR` lines at shutdown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a socket listening on `port`, read from /proc/net (Linux)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port and len(address) == width:
                found.add(_decode_address(address))
    return found


def _decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


class PrefectStack:
    """One `prefect server start` (SQLite in a temporary PREFECT_HOME) plus the processes that
    talk to it. Use as a context manager; `stop` is idempotent."""

    def __init__(self, workdir: Path, host: str | None = None) -> None:
        self.workdir = workdir
        self.home = workdir / "prefect-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = host
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # The scheduler's loop, 60 s by default: shortened so a test sees it work.
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_CLI_PROMPT": "false",
            "PYTHONUNBUFFERED": "1",
        }
        self._processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.client = httpx.Client(base_url=self.api_url, timeout=30.0)

    def __enter__(self) -> PrefectStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def spawn(self, name: str, args: list[str], cwd: Path = REPO_ROOT) -> subprocess.Popen[bytes]:
        with open(self.log_path(name), "wb") as log:
            process = subprocess.Popen(
                args,
                cwd=cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._processes.append((name, process))
        return process

    def start_server(self, timeout: float = 180.0) -> None:
        """Start the server (default host unless one was given) and wait until it is healthy."""
        args = [PREFECT, "server", "start", "--port", str(self.port)]
        if self.host:
            args += ["--host", self.host]
        process = self.spawn("server", args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"prefect server exited early:\n{self.log_tail('server')}")
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"prefect server not healthy in {timeout}s:\n{self.log_tail('server')}")

    def cli(self, *args: str, cwd: Path = REPO_ROOT, timeout: float = 180.0) -> str:
        """Run a `prefect` command against this server; raise with its output if it fails."""
        result = subprocess.run(
            [PREFECT, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"prefect {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def start_worker(self, pool: str) -> subprocess.Popen[bytes]:
        return self.spawn("worker", [PREFECT, "worker", "start", "--pool", pool])

    def api(self, method: str, path: str, json: Any = None) -> Any:
        response = self.client.request(method, path, json=json)
        response.raise_for_status()
        return response.json() if response.content else None

    def run_deployment(self, flow_name: str, deployment: str, parameters: dict[str, Any]) -> str:
        """Create a flow run of a deployment through the API; returns its id."""
        found = self.api("GET", f"/deployments/name/{flow_name}/{deployment}")
        run = self.api(
            "POST", f"/deployments/{found['id']}/create_flow_run", {"parameters": parameters}
        )
        return run["id"]

    def wait_for_flow_run(self, flow_run_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.api("GET", f"/flow_runs/{flow_run_id}")
            if run["state_type"] in TERMINAL_STATES:
                return run
            time.sleep(1.0)
        raise TimeoutError(
            f"flow run {flow_run_id} not finished in {timeout}s:\n{self.log_tail('worker')}"
        )

    def flow_runs(self, deployment_id: str, state_types: list[str] | None = None) -> list[dict]:
        """Flow runs of a deployment, optionally only those in `state_types`."""
        body: dict[str, Any] = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}
        if state_types:
            body["flow_runs"]["state"] = {"type": {"any_": state_types}}
        return self.api("POST", "/flow_runs/filter", body)

    def wait_for_scheduled_runs(
        self, deployment_id: str, count: int, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Wait until the server's scheduler has created `count` Scheduled runs."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.flow_runs(deployment_id, ["SCHEDULED"])
            if len(runs) >= count or time.monotonic() > deadline:
                return runs
            time.sleep(1.0)

    def tracebacks(self, name: str) -> list[str]:
        """Tracebacks a process printed to its log, each with the 12 lines that follow it."""
        lines = self.log_path(name).read_text(errors="replace").splitlines()
        return ["\n".join(lines[i : i + 12]) for i, line in enumerate(lines) if "Traceback" in line]

    def artifacts(self, flow_run_id: str) -> list[dict[str, Any]]:
        body = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}
        return self.api("POST", "/artifacts/filter", body)

    def descendant_flow_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        """Subflow runs of a flow run (also those started inside its tasks), with `flow_name`."""
        body = {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}}
        runs = self.api("POST", "/flow_runs/filter", body)
        for run in runs:
            run["flow_name"] = self.api("GET", f"/flows/{run['flow_id']}")["name"]
        return runs

    def stop(self, grace: float = 15.0) -> None:
        """TERM every process group started here, newest first; KILL what outlives the grace.

        Descendants are listed first: a worker starts flow runs in sessions of their own,
        which a signal to the worker's group would miss."""
        descendants = [pid for _, p in self._processes for pid in _descendants(p.pid)]
        for _, process in reversed(self._processes):
            _signal_group(process, signal.SIGTERM)
        for pid in descendants:
            _signal_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, process in reversed(self._processes):
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(process, signal.SIGKILL)
            process.wait()
        for pid in descendants:
            _signal_pid(pid, signal.SIGKILL)
        self._processes.clear()
        self.client.close()

    def alive(self) -> list[str]:
        return [name for name, process in self._processes if process.poll() is None]


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _descendants(root: int) -> list[int]:
    """Every live process below `root`, from the parent pids in /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def chromium(url: str, *, screenshot: Path | None = None, budget_ms: int = 20000) -> str:
    """Load `url` in headless Chromium (fresh profile) and return the rendered DOM.

    `--virtual-time-budget` lets the single-page UI fetch from the API and render before the
    DOM is dumped. Chromium runs in its own process group, killed on timeout.
    """
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        base = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        base += [f"--virtual-time-budget={budget_ms}", "--window-size=1400,1800"]
        if screenshot is not None:
            _run_browser([*base, f"--screenshot={screenshot}", url])
        return _run_browser([*base, "--dump-dom", url])


def _run_browser(args: list[str], timeout: float = 120.0) -> str:
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        _signal_group(process, signal.SIGKILL)
        process.wait()
    if process.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"chromium exited with {process.returncode} for {args[-1]}")
    return out
