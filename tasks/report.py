"""The run report: one markdown artifact with the key metrics, where the outputs are, and the
PNG reports; table artifacts for the metrics and the rejected input files.

The Prefect 3.8 UI (both the default and the /v2 UI) renders markdown images whose source is a
`data:image/png;base64,...` URI; paths on the worker's disk would not load in a browser, so the
PNGs are embedded (the largest are listed by path instead, to keep the artifact small).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.common import artifact_key, publish_markdown, publish_table

MANIFESTS = ("symbolic/manifest.parquet", "audio/manifest.parquet")
MAX_EMBEDDED_PNG_BYTES = 1_500_000
MAX_EMBEDDED_PNGS = 12


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested results (dicts, lists, pydantic models) as `a.b.0.c` -> leaf value."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        items = [(str(key), item) for key, item in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(str(index), item) for index, item in enumerate(value)]
    else:
        return {prefix: value} if prefix else {"value": value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat


def metric_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every finite number in the flows' results, one row per (flow, name), sorted."""
    rows = []
    for flow_name, result in sorted(results.items()):
        for name, value in flatten(result).items():
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if is_number and math.isfinite(value):
                rows.append({"flow": flow_name, "metric": name, "value": value})
    return rows


def output_rows(results: Mapping[str, Any]) -> list[dict[str, str]]:
    """The string leaves that name files or directories: where each flow put its outputs."""
    rows = []
    for flow_name, result in sorted(results.items()):
        for name, value in flatten(result).items():
            if isinstance(value, str) and "/" in value and Path(value).exists():
                rows.append({"flow": flow_name, "output": name, "path": value})
    return rows


def rejected_rows(data_dir: Path) -> list[dict[str, str]]:
    """Input files the manifests rejected, with the reason a person can act on."""
    rows = []
    for manifest in MANIFESTS:
        path = data_dir / manifest
        if not path.exists():
            continue
        table = pq.read_table(path, columns=["path", "status", "reason"]).to_pylist()
        corpus = manifest.split("/")[0]
        rows += [
            {"corpus": corpus, "path": row["path"], "reason": row["reason"]}
            for row in table
            if row["status"] == "rejected"
        ]
    return rows


def png_markdown(path: Path, alt: str) -> str:
    """A markdown image the UI shows inline, or the path when the PNG is too big to embed."""
    data = path.read_bytes()
    if len(data) > MAX_EMBEDDED_PNG_BYTES:
        return f"- `{path}` ({len(data) // 1024} KiB, not embedded)"
    encoded = base64.b64encode(data).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"


def report_pngs(data_dir: Path, results: Mapping[str, Any]) -> list[Path]:
    """The PNGs the flows returned (this run's), then the others under `data_dir/reports`."""
    named = [
        Path(value)
        for result in results.values()
        for value in flatten(result).values()
        if isinstance(value, str) and value.endswith(".png") and Path(value).is_file()
    ]
    found = sorted((data_dir / "reports").rglob("*.png"))
    unique = list(dict.fromkeys(path.resolve() for path in named + found))
    return unique[:MAX_EMBEDDED_PNGS]


def _display_name(path: Path, data_dir: Path) -> str:
    try:
        return path.relative_to(data_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = [_cell(row[column]) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def report_markdown(
    title: str,
    data_dir: Path,
    metrics: list[dict[str, Any]],
    outputs: list[dict[str, str]],
    rejected: list[dict[str, str]],
    pngs: list[Path],
) -> str:
    parts = [f"# {title}", "", f"Data directory: `{data_dir.resolve()}`", ""]
    parts += ["## Key metrics", ""]
    parts += [_table(metrics, ["flow", "metric", "value"]) if metrics else "No metrics.", ""]
    parts += ["## Outputs", ""]
    parts += [_table(outputs, ["flow", "output", "path"]) if outputs else "No outputs.", ""]
    parts += [f"## Rejected input files: {len(rejected)}", ""]
    if rejected:
        parts += [_table(rejected, ["corpus", "path", "reason"]), ""]
    if pngs:
        parts += ["## Reports", ""]
        for png in pngs:
            name = _display_name(png, data_dir)
            parts += [f"**{name}**", "", png_markdown(png, name), ""]
    return "\n".join(parts)


@task(name="report", cache_policy=NO_CACHE)
def publish_report(name: str, data_dir: str, results: dict[str, Any]) -> dict[str, Any]:
    """Publish `<name>-report` (markdown), `<name>-metrics` and `<name>-rejected` (tables).

    Returns the artifact keys and counts: a small record for the flow's result."""
    root = Path(data_dir)
    metrics = metric_rows(results)
    rejected = rejected_rows(root)
    pngs = report_pngs(root, results)
    title = f"{name} run report"
    markdown = report_markdown(title, root, metrics, output_rows(results), rejected, pngs)
    keys = {kind: artifact_key(f"{name}-{kind}") for kind in ("report", "metrics", "rejected")}
    publish_markdown(keys["report"], markdown, description="Key metrics, outputs and plots")
    publish_table(keys["metrics"], metrics, description="Numbers the flows returned")
    publish_table(keys["rejected"], rejected, description="Input files rejected, with reasons")
    return {
        "artifacts": keys,
        "metrics": len(metrics),
        "rejected": len(rejected),
        "pngs": len(pngs),
    }
