"""Prefect flows: the symbolic and audio jobs and the pipeline that runs both."""

import os

# Offline by design (no network beyond package registries): Prefect's telemetry would only
# fail, and its bookkeeping write races other processes on a shared SQLite database.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
