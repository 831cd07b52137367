"""The run report, as pure functions: results first (each model beside its baselines on the test
split), then where the outputs are, the dataset bookkeeping, the rejected input files and the
PNG reports. `tasks/report.py` publishes it as Prefect artifacts.

The Prefect 3.8 UI (both the default and the /v2 UI) renders markdown images whose source is a
`data:image/png;base64,...` URI; paths on the worker's disk would not load in a browser, so the
PNGs are embedded (the largest are listed by path instead, to keep the artifact small). Every
path shown is relative to the data directory, so reports of two machines read the same.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import BaseModel

MANIFESTS = ("symbolic/manifest.parquet", "audio/manifest.parquet")
MAX_EMBEDDED_PNG_BYTES = 1_500_000
MAX_EMBEDDED_PNGS = 12
# metrics.json names -> what the results table calls them, in the order it lists them.
SYMBOLIC_MODELS = {
    "model": "music Transformer (ours)",
    "vanilla_transformer": "vanilla Transformer",
    "ngram": "n-gram",
}
AUDIO_METHODS = {"model": "super-resolution model (ours)", "spline": "spline", "sinc": "sinc"}
SYMBOLIC_COLUMNS = {"test_nll": "test NLL", "test_ppl": "perplexity", "test_accuracy": "accuracy"}
AUDIO_COLUMNS = {"snr_db": "SNR (dB)", "lsd": "LSD", "lsd_hf": "LSD-HF"}


def significant(value: float, digits: int = 3) -> float:
    """`value` rounded to `digits` significant digits (0.0012345 -> 0.00123, 23.114 -> 23.1)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested results (dicts, lists, pydantic models) as `a.b.0.c` -> leaf value."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, Mapping):
        items = [(str(key), item) for key, item in value.items()]
    elif isinstance(value, list | tuple):
        items = [(str(index), item) for index, item in enumerate(value)]
    else:
        return {prefix: value} if prefix else {"value": value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat


def _metrics_json(result: Any) -> dict[str, Any] | None:
    """The metrics.json an evaluate stage wrote, named in a flow's result (`metrics.metrics`)."""
    path = flatten(result).get("metrics.metrics")
    if not isinstance(path, str) or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def results_table(
    metrics: Mapping[str, Any], labels: Mapping[str, str], columns: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One row per method in `labels` (the model's own numbers at the top of metrics.json, the
    baselines' under `baselines`), `columns` mapping metrics.json keys to column names."""
    sources = {"model": metrics, **metrics.get("baselines", {})}
    return [
        {"model": label, **{name: significant(sources[key][m]) for m, name in columns.items()}}
        for key, label in labels.items()
        if key in sources
    ]


def symbolic_results(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Test NLL (nats/token), perplexity and accuracy of the model and its baselines."""
    return results_table(metrics, SYMBOLIC_MODELS, SYMBOLIC_COLUMNS)


def audio_results(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Test SNR (dB), LSD and high-band LSD of the model, the spline and sinc."""
    return results_table(metrics, AUDIO_METHODS, AUDIO_COLUMNS)


def result_tables(results: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per flow that evaluated a model this run, its results table (empty when none did)."""
    makers = {"symbolic": symbolic_results, "audio": audio_results}
    tables = {}
    for flow_name, make in makers.items():
        metrics = _metrics_json(results.get(flow_name))
        if metrics is not None:
            tables[flow_name] = make(metrics)
    return tables


def long_rows(tables: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The results tables as one number per row (flow, model, metric, value): one table
    artifact for both flows, whose tables have different columns."""
    rows = []
    for flow_name, table in tables.items():
        for row in table:
            (_, label), *numbers = row.items()
            rows += [
                {"flow": flow_name, "model": label, "metric": metric, "value": value}
                for metric, value in numbers
            ]
    return rows


def metric_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every finite number in the flows' results, one row per (flow, name), sorted: the
    bookkeeping (counts of files, pieces, pairs; training figures)."""
    rows = []
    for flow_name, result in sorted(results.items()):
        for name, value in flatten(result).items():
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if is_number and math.isfinite(value):
                rows.append({"flow": flow_name, "metric": name, "value": value})
    return rows


def output_rows(results: Mapping[str, Any], data_dir: Path) -> list[dict[str, str]]:
    """The string leaves that name files or directories, relative to `data_dir`."""
    rows = []
    for flow_name, result in sorted(results.items()):
        for name, value in flatten(result).items():
            if isinstance(value, str) and "/" in value and Path(value).exists():
                rows.append(
                    {"flow": flow_name, "output": name, "path": display_path(value, data_dir)}
                )
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
        return f"- `{alt}` ({len(data) // 1024} KiB, not embedded)"
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


def display_path(path: str | Path, data_dir: Path) -> str:
    """`path` relative to `data_dir` when it lies inside it, else as given."""
    try:
        return Path(path).resolve().relative_to(data_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = [_cell(row[column]) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        rounded = significant(value)
        # Trailing zeros kept (12.0, not 12): every number shows its 3 significant digits.
        return f"{rounded:.0f}" if abs(rounded) >= 1000 else f"{rounded:#.3g}"
    return str(value).replace("|", "\\|")


RESULT_CAPTIONS = {
    "symbolic": "Next-note music, test split (NLL in nats per token; lower is better)",
    "audio": "Audio super-resolution, test files (SNR higher, LSD lower is better)",
}


def report_markdown(
    title: str,
    data_dir: Path,
    header: Mapping[str, Any],
    results: Mapping[str, list[dict[str, Any]]],
    metrics: list[dict[str, Any]],
    outputs: list[dict[str, str]],
    rejected: list[dict[str, str]],
    pngs: list[Path],
) -> str:
    """The report: a header (`header` items, e.g. profile and seed), the results tables, then
    outputs, bookkeeping, rejected files and the PNGs."""
    facts = " · ".join(f"{key} `{value}`" for key, value in header.items())
    parts = [f"# {title}", "", f"{facts} · paths relative to `{data_dir}`", ""]
    parts += ["## Results", ""]
    if not results:
        parts += ["No model was evaluated in this run.", ""]
    for flow_name, rows in results.items():
        parts += [f"**{RESULT_CAPTIONS[flow_name]}**", "", markdown_table(rows), ""]
    parts += ["## Outputs", ""]
    parts += [markdown_table(outputs) if outputs else "No outputs.", ""]
    parts += ["## Data and training bookkeeping", ""]
    parts += [markdown_table(metrics) if metrics else "No numbers.", ""]
    parts += [f"## Rejected input files: {len(rejected)}", ""]
    if rejected:
        parts += [markdown_table(rejected), ""]
    if pngs:
        parts += ["## Reports", ""]
        for png in pngs:
            name = display_path(png, data_dir)
            parts += [f"**{name}**", "", png_markdown(png, name), ""]
    return "\n".join(parts)
