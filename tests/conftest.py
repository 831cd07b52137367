"""Test set-up: an isolated PREFECT_HOME and one Prefect test server per session."""

from __future__ import annotations

import os
import tempfile

# Set before anything imports prefect: persisted results from earlier runs in a shared
# PREFECT_HOME would give false cache hits.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest

# Fixture modules shared by several test files: registered here once, so test modules take the
# fixtures by name instead of importing them (which shadowed them, F811).
pytest_plugins = ["audio_corpus", "flowrun"]


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect server for tests that run flows or tasks with artifacts."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
