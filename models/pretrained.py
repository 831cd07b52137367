"""Pretrained models shipped in the repository: a trained run as one self-contained directory.

    models/pretrained/<name>/
      model.safetensors   the weights (safetensors: nothing is unpickled)
      config.json         the model config those weights fit
      vocab.json          the token vocabulary (or the serialization it reads)
      metrics.json        the numbers the card reports, and how they were measured
      README.md           the model card: data, exact command, steps, wall time, hardware

Everything is written into a pending directory beside the final one and renamed into place, so
a reader never meets half a model; the size limit (git history keeps every committed weight) is
checked before anything is replaced.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from datasets.io import write_bytes_atomic, write_json_atomic
from models.checkpoint import CONFIG_FILE, MODEL_FILE

MAX_MODEL_BYTES = 12_000_000
CARD_FILE = "README.md"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class ModelCard:
    name: str
    summary: str
    data: str
    command: str
    steps: int
    wall_time: str
    hardware: str
    metrics: Mapping[str, Any]  # the headline numbers, shown as a table
    notes: list[str] = field(default_factory=list)


def hardware() -> str:
    """This machine in a line: CPU model, cores and torch threads (or the GPU), torch."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    where = (
        f"GPU {torch.cuda.get_device_name()}"
        if torch.cuda.is_available()
        else f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    )
    return f"{cpu}, {where}; torch {torch.__version__}"


def card_markdown(card: ModelCard, files: list[str]) -> str:
    rows = "\n".join(f"| {key} | {_cell(value)} |" for key, value in card.metrics.items())
    notes = "".join(f"- {note}\n" for note in card.notes)
    return (
        f"# {card.name}\n\n{card.summary}\n\n"
        f"## Data\n\n{card.data}\n\n"
        f"## How it was made\n\n```\n{card.command}\n```\n\n"
        f"- steps: {card.steps}\n- wall time: {card.wall_time}\n- hardware: {card.hardware}\n\n"
        f"## Metrics\n\n| metric | value |\n| --- | --- |\n{rows}\n\n"
        + (f"## Notes\n\n{notes}\n" if notes else "")
        + "Files: "
        + ", ".join(f"`{name}`" for name in files)
        + ". Pass this directory to `--model`; nothing is unpickled.\n"
    )


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def export_pretrained(
    run_dir: str | Path,
    out_dir: str | Path,
    card: ModelCard,
    metrics: Mapping[str, Any],
    texts: Mapping[str, str] | None = None,
) -> Path:
    """Copy a run's weights and config into `out_dir` with `texts` (file name -> content: the
    vocabulary), metrics.json and the model card; refused (nothing replaced) when the weights
    exceed `MAX_MODEL_BYTES`."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    pending = out_dir.with_name(f".{out_dir.name}.pending")
    retired = out_dir.with_name(f".{out_dir.name}.old")
    if retired.is_dir() and not out_dir.exists():  # a kill between the two renames below
        retired.rename(out_dir)
    weights = run_dir / MODEL_FILE
    size = weights.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ValueError(
            f"{weights}: {size / 1e6:.1f} MB of weights, over the {MAX_MODEL_BYTES / 1e6:.0f} MB "
            "a shipped model may take (every committed weight stays in git history)"
        )
    shutil.rmtree(pending, ignore_errors=True)
    pending.mkdir(parents=True)
    shutil.copyfile(weights, pending / MODEL_FILE)
    shutil.copyfile(run_dir / CONFIG_FILE, pending / CONFIG_FILE)
    for name, text in (texts or {}).items():
        write_bytes_atomic(pending / name, text.encode())
    write_json_atomic(pending / METRICS_FILE, dict(metrics))
    files = sorted(path.name for path in pending.iterdir())
    write_bytes_atomic(pending / CARD_FILE, card_markdown(card, files).encode())
    shutil.rmtree(retired, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(retired)
    pending.rename(out_dir)
    shutil.rmtree(retired, ignore_errors=True)
    return out_dir


def improves_on_shipped(model_dir: str | Path, metric: str, value: float) -> bool:
    """Whether `value` of `metric` (lower is better) beats the shipped model's in `model_dir`;
    true when nothing is shipped there yet. Weights are recommitted only when this holds."""
    path = Path(model_dir) / METRICS_FILE
    if not path.is_file():
        return True
    shipped = json.loads(path.read_text()).get(metric)
    return shipped is None or value < shipped
