"""Dask scale-out of the data stages: one worker against two (and the default threads).

Times the symbolic data stage (parse batches, then tokenize in 12 keys) and the audio data
stage (load batches, then low/high-resolution pairs batches) on N Bach chorales, each from a
cold cache (a fresh data dir per run). The Dask LocalCluster is started before the clock and
handed over as `dask_address`, so the times are the stages' own; its start-up is reported apart.

    .venv/bin/python bench/bench_dask.py                  # 48 chorales, 1 and 2 workers
    .venv/bin/python bench/bench_dask.py --pieces 96 --workers 1 2 4

Writes bench/out/dask.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from orchestration_corpus import OUT, chorale_corpus, quiet_prefect, start_prefect

quiet_prefect()

from flows.audio import AudioParams, audio_flow  # noqa: E402
from flows.runners import make_task_runner  # noqa: E402
from flows.symbolic import SymbolicParams, symbolic_flow  # noqa: E402


def stage_seconds(flow, params, task_runner) -> float:
    shutil.rmtree(params.data_dir, ignore_errors=True)
    start = time.perf_counter()
    flow.with_options(task_runner=task_runner)(params)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pieces", type=int, default=48)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    args = parser.parse_args()

    from distributed import LocalCluster

    midi, wav = chorale_corpus(args.pieces)
    work = OUT / "dask"
    stages = {
        "symbolic data (parse + tokenize)": (
            symbolic_flow,
            lambda n: SymbolicParams(
                data_dir=str(work / "data"),
                corpus=str(midi),
                stages=["data"],
                profile="full",
                batch_size=max(1, args.pieces // (2 * n)),
            ),
        ),
        "audio data (load + pairs)": (
            audio_flow,
            lambda n: AudioParams(
                data_dir=str(work / "data"),
                corpus=str(wav),
                stages=["data"],
                profile="full",
                batch_size=max(1, args.pieces // (2 * n)),
            ),
        ),
    }
    start_prefect()
    print(f"{args.pieces} chorales, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'stage':<34}{'runner':<9}{'workers':>8}{'seconds':>9}{'speed-up':>10}")
    rows = []
    for stage, (flow, make_params) in stages.items():
        threads = min(
            stage_seconds(flow, make_params(2), make_task_runner("threads", 2))
            for _ in range(args.repeats)
        )
        rows.append({"stage": stage, "runner": "threads", "workers": 2, "seconds": threads})
        for n in sorted({1, *args.workers}):
            started = time.perf_counter()
            with LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=logging.WARNING,
            ) as cluster:
                cluster_seconds = time.perf_counter() - started
                runner = make_task_runner("dask", n, cluster.scheduler_address)
                seconds = min(
                    stage_seconds(flow, make_params(n), runner) for _ in range(args.repeats)
                )
            rows.append(
                {
                    "stage": stage,
                    "runner": "dask",
                    "workers": n,
                    "seconds": seconds,
                    "cluster_start_seconds": cluster_seconds,
                }
            )
        one = next(r["seconds"] for r in rows if r["stage"] == stage and r["workers"] == 1)
        for row in rows:
            if row["stage"] == stage:
                row["speedup_vs_1_dask_worker"] = one / row["seconds"]
                print(
                    f"{row['stage']:<34}{row['runner']:<9}{row['workers']:>8}"
                    f"{row['seconds']:>9.2f}{row['speedup_vs_1_dask_worker']:>9.2f}x",
                    flush=True,
                )
    summary = {
        "pieces": args.pieces,
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "rows": [
            {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in rows
        ],
    }
    (OUT / "dask.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
