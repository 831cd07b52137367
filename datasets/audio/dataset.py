"""The audio data stage's output: manifest, files table and pair shards under `data_dir/audio`.

The stage, one file at a time so memory never grows with the corpus:
1. `datasets.audio.load.load_entry`: decode, mix to mono, resample to `hr_rate`, write
   `audio/hr/<file_id>.wav`.
2. `split_pieces` (datasets.splits) assigns whole files to train/valid/test, before patching.
3. `datasets.audio.lowres.pairs_entry`: `degrade` the whole file (anti-aliasing filter +
   decimation, optionally the SAR quantizer) and find its loud patches; cached per file as .npz.
4. `write_audio_dataset`: the manifest, `files.parquet`, and the pair shards
   `pairs/<split>-NNNNN.parquet` (`datasets.audio.shards`), files in `file_id` order, patches
   cut from the hr WAV and the cached lr signal as they are written.

Every per-file result is content-addressed under `cache/audio/` by the file's sha256, the
parameters and the code version, so a rerun with nothing changed decodes nothing.

Durability: every file is written beside and renamed (atomic: a killed run leaves no half
file), but the stage's bulk files (hr WAVs, lr caches, load stamps, shards, manifest) are not
fsynced one by one: `write_audio_dataset` syncs the filesystem once at its end, before the
stage stamp is written. A power cut before that sync can lose or shorten files of this run;
reuse checks every cache entry it trusts (the load stamp parses, the WAV has the recorded rate
and length, the lr cache opens as a CRC-checked npz with the expected arrays) and redoes what
fails, and the shards only count once the stamp written after the sync says so.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import datasets.audio.shards
from datasets.audio.lowres import pairs_code_version
from datasets.audio.pairs import PairSpec
from datasets.audio.shards import ROWS_PER_FILE, write_split_shards
from datasets.io import (
    code_version,
    sha256_json,
    sync_filesystem,
    write_manifest,
    write_parquet_atomic,
)
from datasets.splits import SPLITS

FILES_SCHEMA = pa.schema(
    [
        ("file_id", pa.string()),
        ("path", pa.string()),
        ("split", pa.string()),
        ("hr_path", pa.string()),  # relative to the data directory
        ("n_samples", pa.int64()),
    ]
)


def corpus_part(path: str) -> str:
    """The part of a mixed corpus a file belongs to: the top directory of its path
    (`recordings-speech/...`, `bach/...`)."""
    return path.split("/", 1)[0]


def read_files_table(
    data_dir: str | os.PathLike[str], columns: list[str] | None = None
) -> pa.Table:
    """`audio/files.parquet` (the accepted files), with a clear error when the data stage has
    not written it yet."""
    path = Path(data_dir) / "audio" / "files.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the audio data stage first")
    return pq.read_table(path, columns=columns)


def file_parts(data_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Each file_id of `audio/files.parquet` mapped to its corpus part."""
    table = read_files_table(data_dir, ["file_id", "path"])
    return {
        file_id: corpus_part(file_path)
        for file_id, file_path in zip(
            table.column("file_id").to_pylist(), table.column("path").to_pylist(), strict=True
        )
    }


def dataset_key(records: Sequence[dict[str, Any]], splits: dict[str, str], spec: PairSpec) -> str:
    """The stage stamp's key: every file's outcome and lr cache (which already hashes its
    sha256, parameters and code), the splits, the spec and the code that writes the shards."""
    return sha256_json(
        [
            [(r["path"], r["status"], r["reason"], r.get("lr_path", "")) for r in records],
            splits,
            dataclasses.asdict(spec),
            pairs_code_version(),
            code_version(datasets.audio.shards, sys.modules[__name__]),
        ]
    )


def write_audio_dataset(
    records: Sequence[dict[str, Any]],
    splits: dict[str, str],
    data_dir: str | os.PathLike[str],
    spec: PairSpec,
    rows_per_file: int = ROWS_PER_FILE,
) -> dict[str, Any]:
    """Write `audio/manifest.parquet`, `audio/files.parquet` and the pair shards; summarize.

    `records` come from `pairs_entry` (every file found, any status); `splits` maps the
    file_id of every ok record to its split.
    """
    data_dir = Path(data_dir)
    audio_dir = data_dir / "audio"
    write_manifest(
        audio_dir / "manifest.parquet",
        [{k: r[k] for k in ("path", "sha256", "size_bytes", "status", "reason")} for r in records],
        durable=False,
    )
    ok = sorted((r for r in records if r["status"] == "ok"), key=lambda r: r["file_id"])
    files = [
        {
            "file_id": r["file_id"],
            "path": r["path"],
            "split": splits[r["file_id"]],
            "hr_path": r["hr_path"],
            "n_samples": r["n_samples"],
        }
        for r in ok
    ]
    write_parquet_atomic(
        audio_dir / "files.parquet", pa.Table.from_pylist(files, FILES_SCHEMA), durable=False
    )
    keep = {f"{r['file_id']}.wav" for r in ok}
    for stale in (audio_dir / "hr").glob("*.wav"):
        if stale.name not in keep:
            stale.unlink()
    summary: dict[str, Any] = {
        "n_files": len(records),
        "n_ok": len(ok),
        "n_rejected": sum(r["status"] == "rejected" for r in records),
        "n_duplicate": sum(r["status"] == "duplicate" for r in records),
        "n_silent": sum(r["n_silent"] for r in ok),
        "hr_seconds": sum(r["n_samples"] for r in ok) / spec.hr_rate,
    }
    members = {split: [r for r in ok if splits[r["file_id"]] == split] for split in SPLITS}
    written = write_split_shards(members, data_dir, spec, rows_per_file)
    for split in SPLITS:
        summary[f"files_{split}"] = len(members[split])
        summary[f"pairs_{split}"] = sum(r["n_patches"] for r in members[split])
        summary[f"shards_{split}"] = len(written[split])
    # One sync for every file this stage wrote (hr WAVs, lr caches, shards, manifest) instead
    # of an fsync per file; the caller writes its stamp after this, so a stamp on disk always
    # means the files it vouches for are on disk too.
    sync_filesystem(data_dir)
    return summary
