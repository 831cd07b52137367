"""The symbolic data stage's output: manifest, notes, token splits and vocabulary.

`write_dataset` gathers what the per-file steps cached (`datasets.symbolic.parse`,
`datasets.symbolic.tokens`) into `symbolic/manifest.parquet`, `notes.parquet`,
`tokens/<split>.parquet` and `vocab.json`, and stamps the directory, so a rerun whose inputs,
splits, vocabulary and code are unchanged writes nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datasets.inventory import STATUSES
from datasets.io import (
    code_version,
    manifest_row,
    sha256_json,
    write_bytes_atomic,
    write_manifest,
    write_parquet_atomic,
)
from datasets.splits import SPLITS
from datasets.stamps import reuse_stamp, write_stamp
from datasets.symbolic.notes import NOTE_COLUMNS, note_table
from datasets.symbolic.parse import piece_id
from datasets.symbolic.tokenizer import VOCAB_FILE, Vocab
from datasets.symbolic.tokens import (
    TOKEN_ROW_GROUP,
    TOKEN_SCHEMA,
    token_table,
    tokenize_code_version,
)


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
        "vocab": out_dir / VOCAB_FILE,
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
            "code": [tokenize_code_version(), code_version(sys.modules[__name__])],
        }
    )
    recorded = reuse_stamp(out_dir, key, paths.values())
    if recorded is not None:
        return recorded | {"reused": True}

    notes_tables = []
    for record in sorted(records, key=lambda r: r["path"]):
        if not record["notes_cache"]:
            continue
        notes = pd.read_parquet(record["notes_cache"])
        notes["piece_id"] = [piece_id(record["path"], p) for p in notes["piece"]]
        # map, not isin: pandas' isin on Arrow strings rebuilds the lookup from every piece
        # id on each call, which made this loop quadratic (minutes on music21's corpus).
        notes["split"] = notes["piece_id"].map(splits)
        notes = notes[notes["split"].notna()]
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
    tokens["split"] = tokens["piece_id"].map(splits)
    tokens = tokens[tokens["split"].notna()]
    counts: dict[str, Any] = {}
    for split in SPLITS:
        part = tokens[tokens["split"] == split]
        write_parquet_atomic(
            paths[f"tokens_{split}"],
            token_table(part.to_dict("records")),
            row_group_size=TOKEN_ROW_GROUP,
        )
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
