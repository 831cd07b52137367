"""Tokenizing one parsed file, cached, and the token table every split is written as.

`tokenize_record` quantizes, tokenizes and transposes to all 12 keys every piece of one parsed
file, keeping the rows under `cache/symbolic/tokens/<key>.parquet`, keyed on the note table, the
vocabulary and the code version: a new file is tokenized alone, a rerun tokenizes nothing.
`token_table` is the one way rows become a table in `TOKEN_SCHEMA` (sorted, list columns built
without a Python loop), for the cache, the dataset's splits and the JSB benchmark.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

import datasets.symbolic.augment
import datasets.symbolic.tokenizer
from datasets.io import code_version, sha256_json, write_parquet_atomic
from datasets.symbolic.augment import KEYS, transposed_tokens
from datasets.symbolic.notes import NOTE_COLUMNS
from datasets.symbolic.parse import piece_id
from datasets.symbolic.tokenizer import Vocab, bar_steps, quantize

# Rows per row group of a tokens file: the training stream takes the groups in a new random
# order every epoch, so small groups spread each stretch of training over the whole corpus.
TOKEN_ROW_GROUP = 256
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


def tokenize_code_version() -> str:
    return code_version(
        datasets.symbolic.tokenizer, datasets.symbolic.augment, sys.modules[__name__]
    )


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
