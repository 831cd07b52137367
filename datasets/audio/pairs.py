"""Pair maths for audio super-resolution: how a high-resolution signal becomes its training pairs.

A `PairSpec` says how pairs are made (rate, ratio, anti-aliasing filter, quantizer, patch,
stride, silence threshold); `degrade` makes the low-resolution input of a whole signal,
`loud_offsets` finds its non-silent patches, and `pair_table` cuts the (hr, lr) patches at
those offsets into the pairs schema. Pure functions of arrays: the per-file caches
(`datasets.audio.load`, `datasets.audio.lowres`), the shards (`datasets.audio.shards`) and the
evaluation build on them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from datasets.audio.signals import FILTERS, RATIOS, FilterName, decimate, sar_quantize

RANDOM_FILTER = "random"
ENERGY_CHUNK = 1 << 17  # samples squared at a time by `loud_offsets` (1 MB of float64)


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


def pairs_schema(spec: PairSpec) -> pa.Schema:
    """The pair shards' schema; the spec rides along as metadata, so whoever reads a shard
    knows how its pairs were made."""
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


def patch_offsets(n_samples: int, patch: int, stride: int) -> np.ndarray:
    """Start of every whole patch; a tail shorter than a patch is not used."""
    if n_samples < patch:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - patch + 1, stride, dtype=np.int64)


def list_column(rows: np.ndarray) -> pa.ListArray:
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
            "hr": list_column(hr_rows.reshape(n, spec.patch)),
            "lr": list_column(lr_rows.reshape(n, lr_patch)),
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
