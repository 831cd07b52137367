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
import hashlib
import json
import math
import os
import re
import sys
import zipfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

import datasets.audio.files
import datasets.audio.signals
from datasets.audio.files import convert_to_wav
from datasets.audio.signals import FILTERS, RATIOS, FilterName, decimate, sar_quantize
from datasets.io import (
    PARQUET_COMPRESSION,
    RejectedInput,
    atomic_path,
    code_version,
    sync_filesystem,
    write_json_atomic,
    write_manifest,
    write_parquet_atomic,
)
from datasets.splits import SPLITS

RANDOM_FILTER = "random"
ROWS_PER_FILE = 256  # pair rows per shard: ~10 MB at patch 8192, bounded whatever the corpus
ENERGY_CHUNK = 1 << 17  # samples squared at a time by `loud_offsets` (1 MB of float64)

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


# zstd's fast levels are negative. On float PCM what -1 finds is mostly the repeated half of
# every overlapping patch (stride = patch / 2): 166 -> 86 MB on the bench corpus.
PAIRS_COMPRESSION_LEVEL = -1


def write_pairs_table(
    target: str | os.PathLike[str], table: pa.Table, durable: bool = True
) -> Path:
    """Write a table of audio patches atomically and deterministically, built for speed.

    Dictionary encoding and column statistics over float audio cost most of the write time
    (measured 4x) and buy nothing: no value repeats and nobody filters on a sample value.
    The float lists are PLAIN-encoded and zstd level -1 compressed: on the bench corpus's
    shards 0.27 CPU s and 86 MB against 0.39 s and 69 MB for BYTE_STREAM_SPLIT + zstd 1 (which
    spends the extra 0.12 s on the split and on the slower level), 166 MB uncompressed. The
    column types stay list<float32>; readers see no change. Not `durable`: the caller syncs.
    """
    with atomic_path(target, durable) as tmp:
        pq.write_table(
            table,
            tmp,
            compression=PARQUET_COMPRESSION,
            compression_level=PAIRS_COMPRESSION_LEVEL,
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
    """(n, width) float32 -> list<float32> without a Python loop; a C-contiguous `rows` is
    wrapped, not copied."""
    n, width = rows.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width, type=pa.int32())
    values = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1)
    return pa.ListArray.from_arrays(offsets, pa.array(values, type=pa.float32()))


def loud_offsets(hr: np.ndarray, spec: PairSpec) -> tuple[np.ndarray, int]:
    """Offsets of the patches whose RMS reaches `spec.silence_rms`, and how many did not.

    Patch energies are sums of the energies of blocks of gcd(patch, stride) samples (every
    patch is a whole number of them), summed in float64, so no patch is copied to be measured
    and no running sum over the whole file loses precision. The squares are taken a few
    blocks at a time into one small float64 buffer, not as a float64 copy of the whole file
    (twice its size in memory: 460 MB for an hour at 16 kHz).
    """
    offsets = patch_offsets(len(hr), spec.patch, spec.stride)
    block = math.gcd(spec.patch, spec.stride)
    n_blocks = len(hr) // block
    blocks = np.asarray(hr[: n_blocks * block], dtype=np.float32).reshape(n_blocks, block)
    energy = np.zeros(n_blocks + 1, dtype=np.float64)
    rows = max(1, ENERGY_CHUNK // block)
    squares = np.empty((min(rows, n_blocks), block), dtype=np.float64)
    for first in range(0, n_blocks, rows):
        part = blocks[first : first + rows]
        np.square(part, out=squares[: len(part)], dtype=np.float64)
        squares[: len(part)].sum(axis=1, out=energy[1 + first : 1 + first + len(part)])
    np.cumsum(energy[1:], out=energy[1:])
    first = offsets // block
    patch_energy = energy[first + spec.patch // block] - energy[first]
    rms = np.sqrt(np.maximum(patch_energy, 0.0) / spec.patch)
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
    return code_version(datasets.audio.files, sys.modules[__name__])


def pairs_code_version() -> str:
    return code_version(datasets.audio.files, datasets.audio.signals, sys.modules[__name__])


def _read_load_stamp(path: Path) -> dict[str, Any] | None:
    """A load stamp as written, or None when it is missing or damaged (a power cut before the
    stage's sync can leave it empty or short): the file is then loaded again."""
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or not {"status", "reason", "n_samples"} <= cached.keys():
        return None
    return cached


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

    `entry` comes from `datasets.symbolic.build.inventory` (path, file, size_bytes, sha256, status,
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
    cached = _read_load_stamp(stamp)
    if cached is not None and (
        cached["status"] != "ok" or _wav_matches(data_dir / hr_rel, hr_rate, cached["n_samples"])
    ):
        record["reused"] = True
    else:
        try:
            frames = convert_to_wav(
                entry["file"],
                data_dir / hr_rel,
                hr_rate,
                max_file_bytes,
                max_seconds,
                durable=False,
            )
            cached = {"status": "ok", "reason": "", "n_samples": frames}
        except RejectedInput as exc:
            cached = {"status": "rejected", "reason": exc.reason, "n_samples": 0}
        write_json_atomic(stamp, cached, durable=False)
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


def _read_lr_cache(path: Path, lr_length: int) -> tuple[int, int] | None:
    """(n_patches, n_silent) of an lr cache that is whole, or None when it is missing or
    damaged: npz is a zip whose members are CRC-checked as they are read, so a file a power
    cut shortened or emptied fails here instead of feeding bad samples to the shards."""
    if not path.exists():
        return None
    try:
        with np.load(path) as cached:
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
    key = hashlib.sha256(
        json.dumps([record["load_key"], fields, pairs_code_version()], sort_keys=True).encode()
    ).hexdigest()
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


Segment = tuple[int, int, int]  # (record index, first patch, end patch) of one shard


def _plan_shards(records: Sequence[dict[str, Any]], rows_per_file: int) -> list[list[Segment]]:
    """Which patches of which records go in which shard: exactly `rows_per_file` rows each
    (the last fewer), records in the given order. Decided from the patch counts alone."""
    shards: list[list[Segment]] = []
    current: list[Segment] = []
    filled = 0
    for index, record in enumerate(records):
        start, n_patches = 0, int(record["n_patches"])
        while start < n_patches:
            stop = min(n_patches, start + rows_per_file - filled)
            current.append((index, start, stop))
            filled += stop - start
            start = stop
            if filled == rows_per_file:
                shards.append(current)
                current, filled = [], 0
    if current:
        shards.append(current)
    return shards


def _shard_table(
    segments: Sequence[Segment],
    records: Sequence[dict[str, Any]],
    data_dir: Path,
    split: str,
    spec: PairSpec,
) -> pa.Table:
    """One shard's rows, cut from the hr WAVs (only the frames its patches cover are read)
    and the cached lr signals, each patch copied once, into the arrays the lists wrap."""
    n = sum(stop - start for _, start, stop in segments)
    lr_patch = spec.patch // spec.ratio
    hr_rows = np.empty((n, spec.patch), dtype=np.float32)
    lr_rows = np.empty((n, lr_patch), dtype=np.float32)
    offset_column = np.empty(n, dtype=np.int64)
    file_ids: list[str] = []
    filters: list[str] = []
    row = 0
    for index, start, stop in segments:
        record = records[index]
        with np.load(data_dir / record["lr_path"]) as cached:
            lr, offsets = cached["lr"], cached["offsets"][start:stop]
        first, end = int(offsets[0]), int(offsets[-1]) + spec.patch
        hr, _ = sf.read(str(data_dir / record["hr_path"]), start=first, stop=end, dtype="float32")
        for k, offset in enumerate(offsets.tolist(), start=row):
            hr_rows[k] = hr[offset - first : offset - first + spec.patch]
            lr_rows[k] = lr[offset // spec.ratio : offset // spec.ratio + lr_patch]
        offset_column[row : row + len(offsets)] = offsets
        file_ids += [record["file_id"]] * len(offsets)
        filters += [record["filter"]] * len(offsets)
        row += len(offsets)
    return pa.Table.from_arrays(
        [
            pa.array(file_ids, type=pa.string()),
            pa.array([split] * n, type=pa.string()),
            pa.array(offset_column, type=pa.int64()),
            pa.array(filters, type=pa.string()),
            _list_column(hr_rows),
            _list_column(lr_rows),
        ],
        schema=pairs_schema(spec),
    )


def _write_shard(
    target: Path,
    segments: Sequence[Segment],
    records: Sequence[dict[str, Any]],
    data_dir: Path,
    split: str,
    spec: PairSpec,
) -> Path:
    table = _shard_table(segments, records, data_dir, split, spec)
    return write_pairs_table(target, table, durable=False)


def _remove_stale_shards(out_dir: Path, split: str, written: Sequence[Path]) -> None:
    """Shards of `split` left from an earlier, larger run."""
    keep = set(written)
    for stale in out_dir.glob(f"{split}-*.parquet"):
        if stale not in keep:
            stale.unlink()


def _submit_split(
    pool: ThreadPoolExecutor,
    records: Sequence[dict[str, Any]],
    split: str,
    data_dir: Path,
    spec: PairSpec,
    rows_per_file: int,
) -> list[Future[Path]]:
    ordered = sorted(records, key=lambda record: record["file_id"])
    out_dir = data_dir / "audio" / "pairs"
    return [
        pool.submit(
            _write_shard,
            out_dir / f"{split}-{number:05d}.parquet",
            segments,
            ordered,
            data_dir,
            split,
            spec,
        )
        for number, segments in enumerate(_plan_shards(ordered, rows_per_file))
    ]


def default_writers() -> int:
    """Shard writers: one per core (each holds one shard, ~10 MB at patch 8192, in memory)."""
    return max(1, min(8, os.cpu_count() or 1))


def write_pair_shards(
    records: Sequence[dict[str, Any]],
    split: str,
    data_dir: str | os.PathLike[str],
    spec: PairSpec,
    rows_per_file: int = ROWS_PER_FILE,
    writers: int | None = None,
) -> list[Path]:
    """Cut the pairs of one split (hr WAV + cached lr) into `pairs/<split>-NNNNN.parquet` shards.

    Shards hold exactly `rows_per_file` rows (the last fewer), files in `file_id` order, so
    the bytes depend on the data alone, never on threads. Which rows go in which shard is
    planned first from the patch counts; each shard is then cut, encoded and written whole by
    one of `writers` threads, so memory holds at most `writers` shards. Shards of this split
    left from an earlier, larger run are removed.
    """
    data_dir = Path(data_dir)
    with ThreadPoolExecutor(writers or default_writers()) as pool:
        futures = _submit_split(pool, records, split, data_dir, spec, rows_per_file)
        written = [future.result() for future in futures]
    _remove_stale_shards(data_dir / "audio" / "pairs", split, written)
    sync_filesystem(data_dir)
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
    # Shards of every split on one pool: the small valid and test splits do not leave a
    # core idle while the next split waits.
    members = {split: [r for r in ok if splits[r["file_id"]] == split] for split in SPLITS}
    with ThreadPoolExecutor(default_writers()) as pool:
        futures = {
            split: _submit_split(pool, members[split], split, data_dir, spec, rows_per_file)
            for split in SPLITS
        }
        written = {split: [future.result() for future in futures[split]] for split in SPLITS}
    for split in SPLITS:
        _remove_stale_shards(audio_dir / "pairs", split, written[split])
        summary[f"files_{split}"] = len(members[split])
        summary[f"pairs_{split}"] = sum(r["n_patches"] for r in members[split])
        summary[f"shards_{split}"] = len(written[split])
    # One sync for every file this stage wrote (hr WAVs, lr caches, shards, manifest) instead
    # of an fsync per file; the caller writes its stamp after this, so a stamp on disk always
    # means the files it vouches for are on disk too.
    sync_filesystem(data_dir)
    return summary
