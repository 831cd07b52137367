"""Low/high-resolution pairs for audio super-resolution, written as a streamed Parquet dataset.

The stage, one file at a time so memory never grows with the corpus:
1. `load_entry`: decode, mix to mono, resample to `hr_rate`, write `audio/hr/<file_id>.wav`.
2. `split_pieces` (datasets.splits) assigns whole files to train/valid/test, before patching.
3. `pairs_entry`: `degrade` the whole file (anti-aliasing filter + decimation, optionally the
   SAR quantizer) and find its loud patches; cached per file as .npz.
4. `write_audio_dataset`: the manifest, `files.parquet`, and the pair shards
   `pairs/<split>-NNNNN.parquet` of at most `rows_per_file` rows each, files in `file_id` order,
   patches cut from the hr WAV and the cached lr signal as they are written.

Every per-file result is content-addressed under `cache/audio/` by the file's sha256, the
parameters and the code version, so a rerun with nothing changed decodes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

import datasets.audio
import datasets.signals
from datasets.audio import convert_to_wav
from datasets.io import (
    PARQUET_COMPRESSION,
    atomic_path,
    code_version,
    write_json_atomic,
    write_manifest,
    write_parquet_atomic,
)
from datasets.notes import RejectedInput
from datasets.signals import FILTERS, RATIOS, FilterName, decimate, sar_quantize
from datasets.splits import SPLITS

RANDOM_FILTER = "random"
ROWS_PER_FILE = 256  # pair rows per shard: ~10 MB at patch 8192, bounded whatever the corpus

FILES_SCHEMA = pa.schema(
    [
        ("file_id", pa.string()),
        ("path", pa.string()),
        ("split", pa.string()),
        ("hr_path", pa.string()),  # relative to the data directory
        ("n_samples", pa.int64()),
    ]
)


@dataclass(frozen=True)
class PairSpec:
    """How pairs are made; all of it goes into the cache key and the shards' schema metadata."""

    hr_rate: int = 16000
    ratio: int = 4
    filter: str = "soxr"  # one of FILTERS, or "random": a filter per file, drawn from the seed
    bits: int | None = None
    patch: int = 8192  # samples at hr_rate
    stride: int = 8192
    silence_rms: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ratio not in RATIOS:
            raise ValueError(f"ratio must be one of {RATIOS}, got {self.ratio}")
        if self.filter not in (*FILTERS, RANDOM_FILTER):
            raise ValueError(f"filter must be one of {(*FILTERS, RANDOM_FILTER)}: {self.filter!r}")
        if self.patch <= 0 or self.patch % self.ratio:
            raise ValueError(
                f"patch {self.patch} must be a positive multiple of ratio {self.ratio}"
            )
        if self.stride <= 0 or self.stride % self.ratio:
            raise ValueError(
                f"stride {self.stride} must be a positive multiple of ratio {self.ratio}"
            )
        if self.bits is not None and not 1 <= self.bits <= 24:
            raise ValueError(f"bits must be in 1..24 or None, got {self.bits}")

    def metadata(self) -> dict[str, str]:
        return {
            "hr_rate": str(self.hr_rate),
            "ratio": str(self.ratio),
            "filter": self.filter,
            "bits": "" if self.bits is None else str(self.bits),
            "patch": str(self.patch),
            "stride": str(self.stride),
            "silence_rms": repr(self.silence_rms),
        }


def write_pairs_table(target: str | os.PathLike[str], table: pa.Table) -> Path:
    """Write a table of audio patches atomically and deterministically, built for speed.

    Dictionary encoding and column statistics over float audio cost most of the write time
    (measured 4x) and buy nothing: no value repeats and nobody filters on a sample value.
    """
    with atomic_path(target) as tmp:
        pq.write_table(
            table,
            tmp,
            compression=PARQUET_COMPRESSION,
            use_dictionary=["file_id", "split", "filter"],
            write_statistics=["file_id", "split", "offset", "filter"],
        )
    return Path(target)


def pairs_schema(spec: PairSpec) -> pa.Schema:
    return pa.schema(
        [
            ("file_id", pa.string()),
            ("split", pa.string()),
            ("offset", pa.int64()),
            ("filter", pa.string()),
            ("hr", pa.list_(pa.float32())),
            ("lr", pa.list_(pa.float32())),
        ],
        metadata=spec.metadata(),
    )


def degrade(
    hr: np.ndarray, ratio: int, filter: FilterName = "soxr", bits: int | None = None
) -> np.ndarray:
    """The low-resolution input for `hr`: anti-alias and decimate, then (optionally) an ADC.

    Length `ceil(len(hr) / ratio)`; sample k stands at hr index k * ratio. The quantizer runs
    after decimation, as a low-rate converter would.
    """
    lr = decimate(hr, ratio, filter)
    return sar_quantize(lr, bits) if bits is not None else lr


def file_filter(spec: PairSpec, file_id: str) -> FilterName:
    """The filter for one file: the spec's, or for `random` one drawn from (seed, file_id)."""
    if spec.filter != RANDOM_FILTER:
        return spec.filter  # type: ignore[return-value]
    digest = hashlib.sha256(f"{spec.seed}\0{file_id}".encode()).digest()
    return FILTERS[int.from_bytes(digest[:8], "big") % len(FILTERS)]


def make_file_id(path: str, sha256: str) -> str:
    """A readable, filesystem-safe id: the manifest path flattened, plus 8 hex of content."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", str(Path(path).with_suffix(""))).strip("_")[-60:]
    return f"{stem or 'audio'}-{sha256[:8]}"


def patch_offsets(n_samples: int, patch: int, stride: int) -> np.ndarray:
    """Start of every whole patch; a tail shorter than a patch is not used."""
    if n_samples < patch:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - patch + 1, stride, dtype=np.int64)


def _list_column(rows: np.ndarray) -> pa.ListArray:
    """(n, width) float32 -> list<float32> without a Python loop."""
    n, width = rows.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width, type=pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1), type=pa.float32()))


def loud_offsets(hr: np.ndarray, spec: PairSpec) -> tuple[np.ndarray, int]:
    """Offsets of the patches whose RMS reaches `spec.silence_rms`, and how many did not.

    Patch energies come from one running sum of squares, so no patch is copied to be measured.
    """
    offsets = patch_offsets(len(hr), spec.patch, spec.stride)
    energy = np.concatenate([[0.0], np.cumsum(np.square(hr, dtype=np.float64))])
    rms = np.sqrt(np.maximum(energy[offsets + spec.patch] - energy[offsets], 0.0) / spec.patch)
    loud = offsets[rms >= spec.silence_rms]
    return loud, int(len(offsets) - len(loud))


def pair_table(
    file_id: str,
    filter_name: str,
    hr: np.ndarray,
    lr: np.ndarray,
    offsets: np.ndarray,
    spec: PairSpec,
) -> pa.Table:
    """The (hr, lr) patches of one file at `offsets` (hr samples): file_id, offset, filter, hr,
    lr. The split column is added when shards are written."""
    lr_patch = spec.patch // spec.ratio
    hr_rows = np.lib.stride_tricks.sliding_window_view(hr, spec.patch)[offsets]
    lr_rows = np.lib.stride_tricks.sliding_window_view(lr, lr_patch)[offsets // spec.ratio]
    n = len(offsets)
    return pa.table(
        {
            "file_id": pa.array([file_id] * n, type=pa.string()),
            "offset": pa.array(offsets, type=pa.int64()),
            "filter": pa.array([filter_name] * n, type=pa.string()),
            "hr": _list_column(hr_rows.reshape(n, spec.patch)),
            "lr": _list_column(lr_rows.reshape(n, lr_patch)),
        }
    )


def make_pairs(file_id: str, hr: np.ndarray, spec: PairSpec) -> tuple[pa.Table, int]:
    """The non-silent (hr, lr) patches of one whole file, and how many silent ones were dropped.

    The whole file is degraded first, so patch edges see the same filter state as the middle.
    """
    hr = np.asarray(hr, dtype=np.float32)
    filter_name = file_filter(spec, file_id)
    lr = degrade(hr, spec.ratio, filter_name, spec.bits)
    offsets, n_silent = loud_offsets(hr, spec)
    return pair_table(file_id, filter_name, hr, lr, offsets, spec), n_silent


def load_code_version() -> str:
    return code_version(datasets.audio, sys.modules[__name__])


def pairs_code_version() -> str:
    return code_version(datasets.audio, datasets.signals, sys.modules[__name__])


def _wav_matches(path: Path, sample_rate: int, frames: int) -> bool:
    """Whether `path` is still the WAV a cache record describes (another rate may overwrite it)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return False
    return info.samplerate == sample_rate and info.frames == frames


def load_entry(
    entry: dict[str, Any],
    data_dir: str | os.PathLike[str],
    hr_rate: int,
    min_samples: int = 1,
    max_file_bytes: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Decode one inventory entry to `audio/hr/<file_id>.wav` (or reuse it) and say how it went.

    `entry` comes from `datasets.symbolic.inventory` (path, file, size_bytes, sha256, status,
    reason). The result adds file_id, hr_path (relative to `data_dir`), n_samples, load_key and
    reused; files shorter than `min_samples` at `hr_rate` are rejected.
    """
    record = dict(entry, file_id="", hr_path="", n_samples=0, load_key="", reused=False)
    if entry["status"] != "ok":
        return record
    data_dir = Path(data_dir)
    key = hashlib.sha256(
        json.dumps(
            [entry["sha256"], hr_rate, max_file_bytes, max_seconds, load_code_version()]
        ).encode()
    ).hexdigest()
    file_id = make_file_id(entry["path"], entry["sha256"])
    hr_rel = f"audio/hr/{file_id}.wav"
    stamp = data_dir / "cache" / "audio" / "load" / f"{key}.json"
    record.update(file_id=file_id, load_key=key)
    cached = json.loads(stamp.read_text()) if stamp.exists() else None
    if cached is not None and (
        cached["status"] != "ok" or _wav_matches(data_dir / hr_rel, hr_rate, cached["n_samples"])
    ):
        record["reused"] = True
    else:
        try:
            frames = convert_to_wav(
                entry["file"], data_dir / hr_rel, hr_rate, max_file_bytes, max_seconds
            )
            cached = {"status": "ok", "reason": "", "n_samples": frames}
        except RejectedInput as exc:
            cached = {"status": "rejected", "reason": exc.reason, "n_samples": 0}
        write_json_atomic(stamp, cached)
    record.update(status=cached["status"], reason=cached["reason"], n_samples=cached["n_samples"])
    if record["status"] == "ok" and record["n_samples"] < min_samples:
        record["status"] = "rejected"
        record["reason"] = (
            f"{record['n_samples']} samples at {hr_rate} Hz, shorter than one patch "
            f"({min_samples}); lower --patch to include it"
        )
    if record["status"] == "ok":
        record["hr_path"] = hr_rel
    return record


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
    key = hashlib.sha256(
        json.dumps([record["load_key"], fields, pairs_code_version()], sort_keys=True).encode()
    ).hexdigest()
    rel = f"cache/audio/lr/{key}.npz"
    if (data_dir / rel).exists():
        with np.load(data_dir / rel) as cached:
            n_patches, n_silent = len(cached["offsets"]), int(cached["n_silent"])
        reused = True
    else:
        hr, _ = sf.read(str(data_dir / record["hr_path"]), dtype="float32")
        lr = degrade(hr, spec.ratio, filter_name, spec.bits)
        offsets, n_silent = loud_offsets(hr, spec)
        with atomic_path(data_dir / rel) as tmp, open(tmp, "wb") as handle:
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


def _shard_batches(
    records: Sequence[dict[str, Any]],
    data_dir: Path,
    split: str,
    spec: PairSpec,
    rows_per_file: int,
) -> Iterator[pa.RecordBatch]:
    """The pairs of `records` (in order) as batches, each with its split column."""
    for record in records:
        hr, _ = sf.read(str(data_dir / record["hr_path"]), dtype="float32")
        with np.load(data_dir / record["lr_path"]) as cached:
            lr, offsets = cached["lr"], cached["offsets"]
        # A chunk at a time: a long file never has all its (overlapping) patches in memory.
        for start in range(0, len(offsets), rows_per_file):
            chunk = offsets[start : start + rows_per_file]
            table = pair_table(record["file_id"], record["filter"], hr, lr, chunk, spec)
            split_column = pa.array([split] * table.num_rows, pa.string())
            yield from table.add_column(1, "split", split_column).to_batches()


def write_pair_shards(
    records: Sequence[dict[str, Any]],
    split: str,
    data_dir: str | os.PathLike[str],
    spec: PairSpec,
    rows_per_file: int = ROWS_PER_FILE,
    writers: int = 2,
) -> list[Path]:
    """Cut the pairs of one split (hr WAV + cached lr) into `pairs/<split>-NNNNN.parquet` shards.

    Shards hold exactly `rows_per_file` rows (the last fewer), files in `file_id` order, so
    the bytes depend on the data alone, never on batching or threads. Shard contents are
    decided in order; encoding and compressing them (most of the time) runs on `writers`
    threads, with at most `writers` shards waiting, so memory stays bounded. Shards of this
    split left from an earlier, larger run are removed.
    """
    data_dir = Path(data_dir)
    out_dir = data_dir / "audio" / "pairs"
    schema = pairs_schema(spec)
    ordered = sorted(records, key=lambda record: record["file_id"])
    written: list[Path] = []
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    in_flight: deque[Future[Path]] = deque()

    with ThreadPoolExecutor(max(1, writers)) as pool:

        def flush(rows: int) -> None:
            nonlocal pending, pending_rows
            table = pa.Table.from_batches(pending, schema=schema.remove_metadata())
            head, tail = table.slice(0, rows), table.slice(rows)
            target = out_dir / f"{split}-{len(written) + len(in_flight):05d}.parquet"
            shard = head.cast(schema).combine_chunks()
            in_flight.append(pool.submit(write_pairs_table, target, shard))
            while len(in_flight) > max(1, writers):
                written.append(in_flight.popleft().result())
            pending, pending_rows = tail.to_batches(), tail.num_rows

        for batch in _shard_batches(ordered, data_dir, split, spec, rows_per_file):
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= rows_per_file:
                flush(rows_per_file)
        if pending_rows:
            flush(pending_rows)
        written.extend(future.result() for future in in_flight)
    for stale in out_dir.glob(f"{split}-*.parquet"):
        if stale not in written:
            stale.unlink()
    return written


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
    write_parquet_atomic(audio_dir / "files.parquet", pa.Table.from_pylist(files, FILES_SCHEMA))
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
    for split in SPLITS:
        members = [r for r in ok if splits[r["file_id"]] == split]
        shards = write_pair_shards(members, split, data_dir, spec, rows_per_file)
        summary[f"files_{split}"] = len(members)
        summary[f"pairs_{split}"] = sum(r["n_patches"] for r in members)
        summary[f"shards_{split}"] = len(shards)
    return summary
