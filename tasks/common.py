"""Shared Prefect plumbing for tasks: artifacts and progress.

Tasks stay thin: they call pure functions from `datasets/` and `models/`, and use these helpers
to show what happened in the Prefect UI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)


def artifact_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")


def publish_table(key: str, rows: Sequence[dict[str, Any]], description: str = "") -> None:
    create_table_artifact(key=artifact_key(key), table=list(rows), description=description)


def publish_markdown(key: str, markdown: str, description: str = "") -> None:
    create_markdown_artifact(key=artifact_key(key), markdown=markdown, description=description)


def log_rejected(records: Sequence[dict[str, Any]]) -> None:
    """A warning per rejected file, naming it and why, in the task's log."""
    logger = get_run_logger()
    for record in records:
        if record["status"] == "rejected":
            logger.warning("rejected %s: %s", record["path"], record["reason"])


class Progress:
    """A Prefect progress artifact (0-100 %) that a training loop updates as a callback."""

    def __init__(self, key: str, description: str = "") -> None:
        self._id: UUID = create_progress_artifact(
            progress=0.0, key=artifact_key(key), description=description
        )

    def __call__(self, fraction: float) -> None:
        update_progress_artifact(self._id, progress=round(100.0 * min(max(fraction, 0.0), 1.0), 1))
