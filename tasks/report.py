"""The run report task: one markdown artifact led by the results tables, and table artifacts for
the results, the bookkeeping numbers and the rejected input files (built by `models.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.report import (
    long_rows,
    metric_rows,
    output_rows,
    rejected_rows,
    report_markdown,
    report_pngs,
    result_tables,
)
from tasks.common import artifact_key, publish_markdown, publish_table


@task(name="pipeline-report", cache_policy=NO_CACHE)
def publish_report(
    name: str, data_dir: str, results: dict[str, Any], profile: str, seed: int
) -> dict[str, Any]:
    """Publish `<name>-report` (markdown), `<name>-results`, `<name>-metrics` and
    `<name>-rejected` (tables). Returns the artifact keys and counts."""
    root = Path(data_dir)
    tables = result_tables(results)
    metrics = metric_rows(results)
    rejected = rejected_rows(root)
    pngs = report_pngs(root, results)
    markdown = report_markdown(
        f"{name} run report",
        root,
        {"profile": profile, "seed": seed},
        tables,
        metrics,
        output_rows(results, root),
        rejected,
        pngs,
    )
    kinds = ("report", "results", "metrics", "rejected")
    keys = {kind: artifact_key(f"{name}-{kind}") for kind in kinds}
    publish_markdown(keys["report"], markdown, description="Results, outputs, data and plots")
    results_rows = long_rows(tables)
    publish_table(keys["results"], results_rows, description="Test results beside baselines")
    publish_table(keys["metrics"], metrics, description="Numbers the flows returned")
    publish_table(keys["rejected"], rejected, description="Input files rejected, with reasons")
    return {
        "artifacts": keys,
        "results": len(results_rows),
        "metrics": len(metrics),
        "rejected": len(rejected),
        "pngs": len(pngs),
    }
