"""Parsing one corpus file, cached: the first per-file step of the symbolic data stage.

`parse_entry` reads a file's notes (MIDI, a score, or a JSB JSON of many pieces) into a note
table kept under `cache/symbolic/notes/<key>.parquet`, or records why it was rejected beside
it; the key hashes the file's sha256, the parameters that matter and the code version of the
readers, so adding one file to a corpus parses only that file and a rerun parses nothing.
The record it returns (paths and piece ids, no notes) is what the later steps pass around.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import datasets.symbolic.corpus
import datasets.symbolic.jsb
import datasets.symbolic.midi
import datasets.symbolic.notes
import datasets.symbolic.scores
from datasets.io import (
    RejectedInput,
    code_version,
    sha256_json,
    write_json_atomic,
    write_parquet_atomic,
)
from datasets.symbolic.corpus import jsb_note_tables, read_pieces

JSB_SUFFIX = ".json"
PIECE_SEPARATOR = ":"  # piece id of one piece inside a multi-piece file: "<path>:<piece>"


def parse_code_version() -> str:
    return code_version(
        datasets.symbolic.notes,
        datasets.symbolic.midi,
        datasets.symbolic.scores,
        datasets.symbolic.corpus,
        datasets.symbolic.jsb,
        sys.modules[__name__],
    )


def _read_pieces(file: Path, max_notes: int | None) -> pd.DataFrame:
    """The file's notes with `piece` (a sub-id, "" for one-piece files) and `fixed_split`."""
    if file.suffix.lower() == JSB_SUFFIX:
        tables = [
            notes.assign(piece=piece, fixed_split=split)
            for piece, split, notes in jsb_note_tables(file)
        ]
        return pd.concat(tables, ignore_index=True)
    tables = [
        notes.assign(piece=piece, fixed_split="") for piece, notes in read_pieces(file, max_notes)
    ]
    return pd.concat(tables, ignore_index=True)


def piece_id(path: str, piece: str) -> str:
    return f"{path}{PIECE_SEPARATOR}{piece}" if piece else path


def parse_entry(
    entry: dict[str, Any], cache_dir: str | os.PathLike[str], max_notes: int | None
) -> dict[str, Any]:
    """Parse one file (or re-use its cached note table) into a record for the later steps."""
    record = {**entry, "notes_cache": "", "pieces": [], "parsed": False, "reused": False}
    if entry["status"] != "ok":
        return record
    key = sha256_json(
        {
            "sha256": entry["sha256"],
            "suffix": Path(entry["file"]).suffix.lower(),
            "max_notes": max_notes,
            "code": parse_code_version(),
        }
    )
    notes_path = Path(cache_dir) / "notes" / f"{key}.parquet"
    rejected_path = Path(cache_dir) / "notes" / f"{key}.rejected.json"
    if notes_path.exists() or rejected_path.exists():
        record["reused"] = True
    else:
        record["parsed"] = True
        try:
            table = _read_pieces(Path(entry["file"]), max_notes)
            write_parquet_atomic(notes_path, pa.Table.from_pandas(table, preserve_index=False))
        except RejectedInput as exc:
            write_json_atomic(rejected_path, {"reason": exc.reason})
        except Exception as exc:  # one odd file must not stop the corpus; not cached, so retried
            reason = f"the reader failed ({type(exc).__name__}: {exc}); check the file plays"
            return record | {"status": "rejected", "reason": reason}
    if rejected_path.exists():
        record["status"] = "rejected"
        record["reason"] = json.loads(rejected_path.read_text())["reason"]
        return record
    heads = pq.read_table(notes_path, columns=["piece", "fixed_split"]).to_pandas()
    heads = heads.drop_duplicates().sort_values(["piece"])
    record["notes_cache"] = str(notes_path)
    record["notes_key"] = key
    record["pieces"] = [
        [piece_id(entry["path"], piece), split]
        for piece, split in zip(heads["piece"], heads["fixed_split"], strict=True)
    ]
    return record
