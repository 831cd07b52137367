"""The low/high-resolution pairs dataset as training batches.

The pairs dataset (`data/audio/pairs/<split>-NNNNN.parquet`, written by `datasets.audio.shards`) is
streamed one shard at a time: each epoch visits the shards and the rows within a shard in an
order drawn from (seed, epoch), so a resumed run sees exactly the batches it would have seen.
The model input is the cubic-spline interpolation of `lr` to the length of `hr` (the paper's
set-up; the model adds a residual to it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datasets.audio.signals import spline_upsample


@dataclass(frozen=True)
class PairsInfo:
    """What the pairs dataset's schema metadata says."""

    hr_rate: int
    ratio: int
    filter: str
    patch: int
    bits: int | None


def pair_shards(pairs_dir: str | Path, split: str) -> list[Path]:
    return sorted(Path(pairs_dir).glob(f"{split}-*.parquet"))


def read_pairs_info(pairs_dir: str | Path, split: str = "train") -> PairsInfo:
    shards = pair_shards(pairs_dir, split)
    if not shards:
        raise FileNotFoundError(f"no {split}-*.parquet shards in {pairs_dir}")
    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(shards[0]).metadata or {}).items()}
    missing = {"hr_rate", "ratio", "filter", "patch"} - set(meta)
    if missing:
        raise ValueError(f"{shards[0]}: schema metadata lacks {sorted(missing)}")
    bits = meta.get("bits", "")
    return PairsInfo(
        hr_rate=int(meta["hr_rate"]),
        ratio=int(meta["ratio"]),
        filter=meta["filter"],
        patch=int(meta["patch"]),
        bits=int(bits) if bits not in ("", "None", "none", "null") else None,
    )


def model_inputs(lr: np.ndarray, ratio: int, patch: int) -> np.ndarray:
    """(B, n_lr) low-res rows -> (B, patch) spline interpolations: the model's input."""
    return np.stack([spline_upsample(row, ratio, patch) for row in lr]).astype(np.float32)


def _rows(table: pa.Table, column: str) -> np.ndarray:
    """A list<float32> column of equal-length lists as a 2-D array."""
    col = table.column(column).combine_chunks()
    values = col.values.to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(len(col), len(values) // max(len(col), 1))


def iter_epoch(
    shards: list[Path], batch_size: int, seed: int, epoch: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (hr, lr) batches of one epoch, in an order fixed by (seed, epoch).

    Rows left over at the end of a shard carry into the next; a last partial batch is dropped,
    unless the whole epoch is smaller than one batch (tiny sets still train).
    """
    rng = np.random.default_rng([seed, epoch])
    carry_hr: list[np.ndarray] = []
    carry_lr: list[np.ndarray] = []
    yielded = False
    for index in rng.permutation(len(shards)):
        table = pq.read_table(shards[index], columns=["hr", "lr"])
        hr, lr = _rows(table, "hr"), _rows(table, "lr")
        order = rng.permutation(len(hr))
        carry_hr.extend(hr[order])
        carry_lr.extend(lr[order])
        while len(carry_hr) >= batch_size:
            yield np.stack(carry_hr[:batch_size]), np.stack(carry_lr[:batch_size])
            del carry_hr[:batch_size], carry_lr[:batch_size]
            yielded = True
    if carry_hr and not yielded:
        yield np.stack(carry_hr), np.stack(carry_lr)


def part_rows(
    shards: list[Path], parts: dict[str, str]
) -> dict[str, list[tuple[Path, np.ndarray]]]:
    """Where each corpus part's rows lie: (shard, row indices) pairs per part, from the
    shards' file_id column and `parts` (file_id -> part, `datasets.audio.dataset.file_parts`)."""
    index: dict[str, list[tuple[Path, np.ndarray]]] = {}
    for shard in shards:
        file_ids = pq.read_table(shard, columns=["file_id"]).column("file_id").to_pylist()
        names = np.array([parts[file_id] for file_id in file_ids])
        for name in sorted(set(names.tolist())):
            index.setdefault(name, []).append((shard, np.flatnonzero(names == name)))
    return index


def _part_stream(
    locations: list[tuple[Path, np.ndarray]], rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One part's (hr, lr) rows without end: its shards in a new order on every pass, the rows
    of each shard shuffled. A part smaller than its share comes round again within an epoch."""
    while True:
        for index in rng.permutation(len(locations)):
            shard, rows = locations[index]
            table = pq.read_table(shard, columns=["hr", "lr"]).take(rows)
            hr, lr = _rows(table, "hr"), _rows(table, "lr")
            for row in rng.permutation(len(rows)):
                yield hr[row], lr[row]


def iter_mixed_epoch(
    index: dict[str, list[tuple[Path, np.ndarray]]],
    batch_size: int,
    seed: int,
    epoch: int,
    exponent: float,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (hr, lr) batches of one epoch with every batch drawn across the corpus's parts.

    `index` is `part_rows`. A part with n rows is drawn with weight n ** `exponent`: 1 keeps the
    data's proportions, 0 gives every part an equal share (the temperature sampling of
    multilingual models), so a part with a tenth of the hours still shapes the model. The epoch
    has as many batches as `iter_epoch`'s; the order is fixed by (seed, epoch), so a resumed run
    sees the batches it would have seen.
    """
    names = sorted(index)
    sizes = np.array([sum(len(rows) for _, rows in index[name]) for name in names], dtype=float)
    weights = sizes**exponent
    weights /= weights.sum()
    rng = np.random.default_rng([seed, epoch])
    streams = [
        _part_stream(index[name], np.random.default_rng([seed, epoch, k]))
        for k, name in enumerate(names)
    ]
    for _ in range(max(int(sizes.sum()) // batch_size, 1)):
        counts = rng.multinomial(batch_size, weights)
        rows = [next(streams[k]) for k, count in enumerate(counts) for _ in range(count)]
        # Shuffled, so that the ranks of a data-parallel run (which take slices) get every part.
        order = rng.permutation(batch_size)
        yield np.stack([rows[i][0] for i in order]), np.stack([rows[i][1] for i in order])


def load_eval_set(
    pairs_dir: str | Path, split: str, limit: int, info: PairsInfo
) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` pairs of `split` in file order (falling back to train): hr and input."""
    shards = pair_shards(pairs_dir, split) or pair_shards(pairs_dir, "train")
    hr_parts, lr_parts, count = [], [], 0
    for shard in shards:
        table = pq.read_table(shard, columns=["hr", "lr"])
        hr_parts.append(_rows(table, "hr"))
        lr_parts.append(_rows(table, "lr"))
        count += table.num_rows
        if count >= limit:
            break
    hr = np.concatenate(hr_parts)[:limit]
    lr = np.concatenate(lr_parts)[:limit]
    return hr, model_inputs(lr, info.ratio, hr.shape[1])


def batches_per_epoch(shards: list[Path], batch_size: int) -> int:
    """How many batches `iter_epoch` yields: the last partial batch is dropped unless it is
    the only one."""
    rows = sum(pq.read_metadata(shard).num_rows for shard in shards)
    return max(rows // batch_size, 1 if rows else 0)
