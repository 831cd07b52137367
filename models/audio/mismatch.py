"""The filter-mismatch study: a model trained on inputs made with one anti-aliasing filter,
evaluated on inputs made with another (the field's known question).

`write_filter_pairs` makes the training pairs for each filter from the same high-res files,
`mismatch_table` evaluates every (train filter, eval filter) combination, and `filter_mismatch`
runs the whole study: pairs, one model per filter, the table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa

from datasets.audio.pairs import RANDOM_FILTER, PairSpec, make_pairs, pairs_schema
from datasets.audio.signals import FILTERS, UNSEEN_FILTERS
from datasets.io import sha256_json, write_json_atomic, write_parquet_atomic
from models.audio.config import EVAL_LIMITS, MISMATCH_FILES, MISMATCH_PROFILE
from models.audio.data import read_pairs_info
from models.audio.evaluate import (
    METRICS,
    evaluate_files,
    read_hr,
    run_pairs_info,
    split_files,
    summarize,
)
from models.audio.infer import load_model

# Trains a run: (pairs dir, run dir, profile, seed, data key) -> summary. The data key names the
# pairs a run is trained on, so a caller can skip a run that is current.
Trainer = Callable[[Path, Path, str, int, str | None], dict[str, Any]]


def write_filter_pairs(
    data_dir: str | Path,
    out_dir: str | Path,
    spec: PairSpec,
    splits: tuple[str, ...],
    max_files: int | None = None,
) -> Path:
    """Pairs made with `spec` from the high-res files of `splits` (the first `max_files` of
    each): one `<split>-00000.parquet` per split.

    The mismatch study needs one training set per filter from the same files; this re-cuts the
    already-decoded `audio/hr/*.wav` with `datasets.audio.pairs.make_pairs`.
    """
    out_dir = Path(out_dir)
    for split in splits:
        tables = []
        for row in split_files(data_dir, split, max_files):
            hr = read_hr(data_dir, row)
            table, _ = make_pairs(row["file_id"], hr, spec)
            tables.append(table.add_column(1, "split", pa.array([split] * table.num_rows)))
        if tables:
            schema = pairs_schema(spec)
            combined = pa.concat_tables([t.cast(schema.remove_metadata()) for t in tables])
            write_parquet_atomic(out_dir / f"{split}-00000.parquet", combined.cast(schema))
    return out_dir


def mismatch_table(
    run_dirs: dict[str, str | Path],
    data_dir: str | Path,
    split: str = "test",
    filters: tuple[str, ...] = FILTERS,
    max_files: int | None = None,
    max_seconds: float | None = None,
) -> list[dict[str, Any]]:
    """Every (train filter, eval filter): the model's mean SNR/LSD and the spline's SNR."""
    files = split_files(data_dir, split, max_files)
    rows = []
    for train_filter, run_dir in sorted(run_dirs.items()):
        model = load_model(run_dir)
        for filter in filters:
            summary = summarize(evaluate_files(model, data_dir, files, filter, None, max_seconds))
            rows.append(
                {
                    "train_filter": train_filter,
                    "eval_filter": filter,
                    **{m: round(summary[m], 3) for m in METRICS},
                    "spline_snr_db": round(summary["baselines"]["spline"]["snr_db"], 3),
                    "gain_db": round(
                        summary["snr_db"] - summary["baselines"]["spline"]["snr_db"], 3
                    ),
                }
            )
    return rows


def filter_mismatch(
    data_dir: str | Path,
    profile: str,
    seed: int,
    train: Trainer,
    data_key: str | None = None,
    train_filters: tuple[str, ...] = (*FILTERS, "random"),
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Train one model per anti-aliasing filter (and `random`, one per file) on the same train
    files with `train`, evaluate each on test inputs made with every filter; writes the table
    to `models/audio-mismatch/<profile>-seed<seed>.json`.

    The models take the profile's smaller mismatch profile and the first files of the split
    (models.audio.config); `data_key` names the audio dataset they are cut from."""
    data_dir = Path(data_dir)
    info = read_pairs_info(data_dir / "audio" / "pairs")
    small = MISMATCH_PROFILE[profile]
    max_files, max_seconds = EVAL_LIMITS[profile]
    root = data_dir / "models" / "audio-mismatch"
    run_dirs = {}
    for train_filter in train_filters:
        spec = PairSpec(
            hr_rate=info.hr_rate,
            ratio=info.ratio,
            filter=train_filter,
            patch=info.patch,
            stride=info.patch,
            seed=seed,
        )
        out_dir = data_dir / "audio" / "mismatch" / train_filter
        pairs = write_filter_pairs(
            data_dir, out_dir, spec, ("train", "valid"), MISMATCH_FILES[profile]
        )
        run_dir = root / f"{small}-{train_filter}-seed{seed}"
        train(pairs, run_dir, small, seed, sha256_json([data_key, dataclasses.asdict(spec)]))
        run_dirs[train_filter] = run_dir
        log(f"mismatch model for {train_filter}: {run_dir}")
    rows = mismatch_table(run_dirs, data_dir, "test", FILTERS, max_files, max_seconds)
    table = write_json_atomic(root / f"{profile}-seed{seed}.json", rows)
    return {"table": table, "rows": rows, "models": run_dirs}


def filter_robustness(
    run_dir: str | Path,
    data_dir: str | Path,
    split: str = "test",
    max_files: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """One trained model on inputs made with every filter, the ones no training set uses
    (`UNSEEN_FILTERS`) included: per filter its SNR gain over the spline on the same inputs.

    `unseen_loss_db` is the mean gain on the filters the model was trained with (all of
    `FILTERS` for a `random` model) minus the gain on the worst unseen filter."""
    train_filter = run_pairs_info(run_dir)["filter"]
    seen = FILTERS if train_filter == RANDOM_FILTER else (train_filter,)
    rows = mismatch_table(
        {train_filter: run_dir}, data_dir, split, FILTERS + UNSEEN_FILTERS, max_files, max_seconds
    )
    seen_gain = sum(r["gain_db"] for r in rows if r["eval_filter"] in seen) / len(seen)
    worst_unseen = min(r["gain_db"] for r in rows if r["eval_filter"] in UNSEEN_FILTERS)
    return {
        "rows": rows,
        "seen_filters": list(seen),
        "seen_gain_db": round(seen_gain, 3),
        "worst_unseen_gain_db": worst_unseen,
        "unseen_loss_db": round(seen_gain - worst_unseen, 3),
    }
