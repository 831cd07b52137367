"""Comparing run outputs byte for byte, as the determinism and kill tests do."""

from __future__ import annotations

import json
from pathlib import Path

from models.checkpoint import STATE_JSON_FILE


def comparable_bytes(path: Path) -> bytes:
    """A file's bytes, but a checkpoint's train state without its wall time: the one field two
    runs of the same inputs and seed cannot share."""
    data = path.read_bytes()
    if path.name != STATE_JSON_FILE:
        return data
    state = json.loads(data)
    state["extra"].pop("seconds", None)
    return json.dumps(state).encode()
