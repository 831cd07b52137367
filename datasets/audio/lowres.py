"""The low-resolution signal of one loaded file, cached: the second per-file step.

`pairs_entry` degrades a whole file (`datasets.audio.pairs.degrade`) and finds its loud
patches once, keeping `cache/audio/lr/<key>.npz` (lr, offsets, n_silent) keyed on the load key,
the pair parameters and the code version; the shards are cut from it and the hr WAV later.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

import datasets.audio.files
import datasets.audio.pairs
import datasets.audio.signals
from datasets.audio.pairs import PairSpec, degrade, file_filter, loud_offsets
from datasets.io import atomic_path, code_version, load_npz, sha256_json


def pairs_code_version() -> str:
    """The code an lr cache entry depends on: a change to any of it makes new entries."""
    return code_version(
        datasets.audio.files,
        datasets.audio.signals,
        datasets.audio.pairs,
        sys.modules[__name__],
    )


def _read_lr_cache(path: Path, lr_length: int) -> tuple[int, int] | None:
    """(n_patches, n_silent) of an lr cache that is whole, or None when it is missing or
    damaged: npz is a zip whose members are CRC-checked as they are read, so a file a power
    cut shortened or emptied fails here instead of feeding bad samples to the shards."""
    if not path.exists():
        return None
    try:
        cached = load_npz(path)
        lr, offsets = cached["lr"], cached["offsets"]
        n_silent = int(cached["n_silent"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if lr.shape != (lr_length,) or lr.dtype != np.float32 or offsets.ndim != 1:
        return None
    return len(offsets), n_silent


def pairs_entry(
    record: dict[str, Any], data_dir: str | os.PathLike[str], spec: PairSpec
) -> dict[str, Any]:
    """Degrade one loaded file to its low-res signal and find its loud patches, cached as
    `cache/audio/lr/<key>.npz` (lr, offsets, n_silent).

    The patches themselves are cut when shards are written (slicing is cheaper than storing
    overlapping patches twice). Adds lr_path (relative to `data_dir`), filter, n_patches,
    n_silent and pairs_reused.
    """
    out = dict(record, lr_path="", filter="", n_patches=0, n_silent=0, pairs_reused=False)
    if record["status"] != "ok":
        return out
    data_dir = Path(data_dir)
    filter_name = file_filter(spec, record["file_id"])
    fields = dataclasses.asdict(spec) | {"filter": filter_name, "seed": None}
    key = sha256_json([record["load_key"], fields, pairs_code_version()])
    rel = f"cache/audio/lr/{key}.npz"
    lr_length = -(-int(record["n_samples"]) // spec.ratio)
    counts = _read_lr_cache(data_dir / rel, lr_length)
    if counts is not None:
        (n_patches, n_silent), reused = counts, True
    else:
        hr, _ = sf.read(str(data_dir / record["hr_path"]), dtype="float32")
        lr = degrade(hr, spec.ratio, filter_name, spec.bits)
        offsets, n_silent = loud_offsets(hr, spec)
        with atomic_path(data_dir / rel, durable=False) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, lr=lr, offsets=offsets, n_silent=np.int64(n_silent))
        n_patches, reused = len(offsets), False
    out.update(
        lr_path=rel,
        filter=filter_name,
        n_patches=n_patches,
        n_silent=n_silent,
        pairs_reused=reused,
    )
    return out
