"""Building the symbolic dataset: per-file cached parse and tokenize steps, then the tables.

Each step is a pure function of its inputs that keeps its result in a content-addressed cache
(`data/cache/symbolic/`): the key hashes the file's sha256, the parameters that matter and the
code version of the modules doing the work, so adding one file to a corpus parses and tokenizes
only that file, and a rerun with nothing changed re-reads caches only. The tasks in
`tasks/symbolic.py` are thin wrappers around these functions; records passed between them are
small dicts of paths and counts.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import datasets.symbolic.augment
import datasets.symbolic.corpus
import datasets.symbolic.jsb
import datasets.symbolic.midi
import datasets.symbolic.notes
import datasets.symbolic.scores
import datasets.symbolic.tokenizer
from datasets.inventory import STATUSES
from datasets.io import (
    STAMP_FILE,
    RejectedInput,
    code_version,
    manifest_row,
    read_stamp,
    sha256_json,
    write_bytes_atomic,
    write_json_atomic,
    write_manifest,
    write_parquet_atomic,
    write_stamp,
)
from datasets.splits import SPLITS, split_pieces
from datasets.symbolic.augment import KEYS, transposed_tokens
from datasets.symbolic.corpus import jsb_note_tables, read_piece
from datasets.symbolic.notes import NOTE_COLUMNS, note_table
from datasets.symbolic.tokenizer import Vocab, quantize

JSB_SUFFIX = ".json"
PIECE_SEPARATOR = ":"  # piece id of one piece inside a multi-piece file: "<path>:<piece>"

TOKEN_SCHEMA = pa.schema(
    [
        ("piece_id", pa.string()),
        ("split", pa.string()),
        ("transpose", pa.int8()),
        ("tokens", pa.list_(pa.int32())),
        ("beats", pa.list_(pa.int32())),
        ("bar_steps", pa.int32()),
        ("n_notes", pa.int32()),  # pitched notes after quantization, in this key
        ("n_moved", pa.int32()),  # quantization loss of the piece (same in every key)
        ("n_merged", pa.int32()),
        ("n_dropped", pa.int32()),  # notes transposed out of 0..127 in this key
    ]
)


def parse_code_version() -> str:
    return code_version(
        datasets.symbolic.notes,
        datasets.symbolic.midi,
        datasets.symbolic.scores,
        datasets.symbolic.corpus,
        datasets.symbolic.jsb,
    )


def tokenize_code_version() -> str:
    return code_version(
        datasets.symbolic.tokenizer, datasets.symbolic.augment, sys.modules[__name__]
    )


def _read_pieces(file: Path, max_notes: int | None) -> pd.DataFrame:
    """The file's notes with `piece` (a sub-id, "" for one-piece files) and `fixed_split`."""
    if file.suffix.lower() == JSB_SUFFIX:
        tables = [
            notes.assign(piece=piece, fixed_split=split)
            for piece, split, notes in jsb_note_tables(file)
        ]
        return pd.concat(tables, ignore_index=True)
    return read_piece(file, max_notes).assign(piece="", fixed_split="")


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


def choose_splits(
    records: Sequence[dict[str, Any]],
    seed: int,
    valid_fraction: float,
    test_fraction: float,
    limit: int | None = None,
) -> dict[str, str]:
    """piece id -> split for every parsed piece.

    Pieces with a split of their own (JSB) keep it, and `limit` keeps the first `limit` of
    each such split; the others are split by `datasets.splits.split_pieces`.
    """
    fixed: dict[str, list[str]] = {}
    free = []
    for record in records:
        for piece, split in record["pieces"]:
            if split:
                fixed.setdefault(split, []).append(piece)
            else:
                free.append(piece)
    chosen = split_pieces(free, seed, valid_fraction, test_fraction)
    for split, pieces in fixed.items():
        chosen.update((piece, split) for piece in sorted(pieces)[:limit])
    return dict(sorted(chosen.items()))


def bar_steps(ts_num: int, ts_den: int, steps_per_beat: int) -> int:
    """Grid steps per bar; a beat is a quarter note, so 6/8 at 4 steps per beat is 12."""
    return max(1, round(ts_num * 4 * steps_per_beat / ts_den))


def tokenize_notes(
    notes: pd.DataFrame, vocab: Vocab, keys: Sequence[int] = KEYS
) -> list[dict[str, Any]]:
    """One piece's note table -> one token row per key (drum notes left out)."""
    pitched = notes[~notes["is_drum"].to_numpy()]
    q = quantize(
        pitched["onset"].to_numpy(),
        pitched["duration"].to_numpy(),
        pitched["pitch"].to_numpy(),
        vocab.steps_per_beat,
        vocab.max_duration,
    )
    first = notes.iloc[0]
    steps = bar_steps(int(first["ts_num"]), int(first["ts_den"]), vocab.steps_per_beat)
    return [
        {
            "transpose": semitones,
            "tokens": tokens,
            "beats": beats,
            "bar_steps": steps,
            "n_notes": len(q.onset) - dropped,
            "n_moved": q.n_moved,
            "n_merged": q.n_merged,
            "n_dropped": dropped,
        }
        for semitones, tokens, beats, dropped in transposed_tokens(
            q.onset, q.duration, q.pitch, vocab, keys
        )
    ]


def _list_array(arrays: Sequence[np.ndarray]) -> pa.ListArray:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros(0, np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def token_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """Token rows -> a table in TOKEN_SCHEMA, sorted by (piece_id, transpose)."""
    rows = sorted(rows, key=lambda row: (row["piece_id"], row["transpose"]))
    columns = {}
    for field in TOKEN_SCHEMA:
        values = [row[field.name] for row in rows]
        if pa.types.is_list(field.type):
            columns[field.name] = _list_array(values)
        else:
            columns[field.name] = pa.array(values, type=field.type)
    return pa.table(columns, schema=TOKEN_SCHEMA)


def tokenize_record(
    record: dict[str, Any], vocab: Vocab, cache_dir: str | os.PathLike[str]
) -> dict[str, Any]:
    """Tokenize every piece of one parsed file in all 12 keys (or re-use the cached tokens)."""
    key = sha256_json(
        {
            "notes": record["notes_key"],
            "vocab": vocab.to_json(),
            "keys": list(KEYS),
            "code": tokenize_code_version(),
        }
    )
    target = Path(cache_dir) / "tokens" / f"{key}.parquet"
    reused = target.exists()
    if not reused:
        notes = pd.read_parquet(record["notes_cache"])
        rows = []
        for piece, group in notes.groupby("piece", sort=True):
            for row in tokenize_notes(group[NOTE_COLUMNS], vocab):
                rows.append({**row, "piece_id": piece_id(record["path"], piece), "split": ""})
        write_parquet_atomic(target, token_table(rows))
    return {"path": record["path"], "tokens_cache": str(target), "reused": reused}


def write_dataset(
    records: Sequence[dict[str, Any]],
    splits: dict[str, str],
    token_records: Sequence[dict[str, Any]],
    vocab: Vocab,
    out_dir: str | os.PathLike[str],
) -> dict[str, Any]:
    """Write manifest.parquet, notes.parquet, tokens/<split>.parquet and vocab.json.

    Only pieces in `splits` are written. Skipped when the stamp shows the same inputs were
    written before and the files are still there.
    """
    out_dir = Path(out_dir)
    paths = {
        "manifest": out_dir / "manifest.parquet",
        "notes": out_dir / "notes.parquet",
        "vocab": out_dir / "vocab.json",
        **{f"tokens_{split}": out_dir / "tokens" / f"{split}.parquet" for split in SPLITS},
    }
    manifest = [
        manifest_row(r["path"], r["sha256"], r["size_bytes"], r["status"], r["reason"])
        for r in records
    ]
    key = sha256_json(
        {
            "manifest": manifest,
            "splits": splits,
            "vocab": vocab.to_json(),
            "tokens": sorted(t["tokens_cache"] for t in token_records),
            "notes": sorted(r["notes_cache"] for r in records),
            "code": tokenize_code_version(),
        }
    )
    if read_stamp(out_dir) == key and all(path.exists() for path in paths.values()):
        return json.loads((out_dir / STAMP_FILE).read_text())["info"] | {"reused": True}

    notes_tables = []
    for record in sorted(records, key=lambda r: r["path"]):
        if not record["notes_cache"]:
            continue
        notes = pd.read_parquet(record["notes_cache"])
        notes["piece_id"] = [piece_id(record["path"], p) for p in notes["piece"]]
        notes = notes[notes["piece_id"].isin(splits)]
        notes["split"] = notes["piece_id"].map(splits)
        notes_tables.append(notes[["piece_id", "split", *NOTE_COLUMNS]])
    # The empty table first fixes the dtypes even when no file was usable.
    empty = note_table({name: [] for name in NOTE_COLUMNS}).assign(piece_id="", split="")
    all_notes = pd.concat(
        [empty[["piece_id", "split", *NOTE_COLUMNS]], *notes_tables], ignore_index=True
    ).sort_values(["piece_id", "onset", "pitch", "track", "duration"], kind="stable")
    write_parquet_atomic(paths["notes"], pa.Table.from_pandas(all_notes, preserve_index=False))

    tokens = pa.concat_tables(
        [pq.read_table(t["tokens_cache"]) for t in token_records] or [TOKEN_SCHEMA.empty_table()]
    ).to_pandas()
    tokens = tokens[tokens["piece_id"].isin(splits)]
    tokens["split"] = tokens["piece_id"].map(splits)
    counts: dict[str, Any] = {}
    for split in SPLITS:
        part = tokens[tokens["split"] == split]
        write_parquet_atomic(paths[f"tokens_{split}"], token_table(part.to_dict("records")))
        counts[f"pieces_{split}"] = int(part["piece_id"].nunique())
    write_bytes_atomic(paths["vocab"], vocab.to_json().encode())
    write_manifest(paths["manifest"], manifest)

    originals = tokens[tokens["transpose"] == 0]
    summary = {
        "n_files": len(manifest),
        **{f"n_{s}": sum(r["status"] == s for r in manifest) for s in STATUSES},
        "n_pieces": len(splits),
        **counts,
        "n_sequences": len(tokens),
        "n_tokens": int(tokens["tokens"].map(len).sum()),
        "n_notes": int(originals["n_notes"].sum()),
        "n_moved": int(originals["n_moved"].sum()),
        "n_merged": int(originals["n_merged"].sum()),
        "n_dropped": int(tokens["n_dropped"].sum()),
    }
    write_stamp(out_dir, key, summary)
    return summary | {"reused": False}
