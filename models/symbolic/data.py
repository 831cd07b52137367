"""Token data for the music models, streamed from the tokens Parquet files.

Rows are read one record batch (or row group) at a time. For training, the row groups come in
a random order and the pieces pass through a bounded shuffle buffer (seeded by a
`torch.Generator`); they are then laid end to end (bos ... eos bos ... eos) into parallel lanes,
so memory does not grow with the corpus and segment k of a lane continues segment k-1, as
Transformer-XL's recurrence memory needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from datasets.symbolic.tokenizer import Vocab

# Token ids shared by the symbolic vocabulary and the JSB serialization (datasets.symbolic.jsb).
PAD, BOS = Vocab.pad, Vocab.bos
IGNORE = -100


@dataclass(frozen=True)
class Piece:
    piece_id: str
    transpose: int
    tokens: np.ndarray  # int64
    beats: np.ndarray  # int64
    bar_steps: int


COLUMNS = ["piece_id", "transpose", "tokens", "beats", "bar_steps"]


def read_pieces(path: str | Path, rows_per_batch: int = 64) -> Iterator[Piece]:
    """The rows of a tokens Parquet file in file order, read one record batch at a time."""
    parquet = pq.ParquetFile(path)
    for record_batch in parquet.iter_batches(batch_size=rows_per_batch, columns=COLUMNS):
        yield from _pieces(record_batch, path)


def _pieces(record_batch: pa.RecordBatch | pa.Table, path: str | Path) -> Iterator[Piece]:
    rows = record_batch.to_pydict()
    for i in range(record_batch.num_rows):
        tokens = np.asarray(rows["tokens"][i], dtype=np.int64)
        beats = np.asarray(rows["beats"][i], dtype=np.int64)
        if len(tokens) != len(beats) or len(tokens) < 2:
            raise ValueError(
                f"{path}: piece {rows['piece_id'][i]!r} has {len(tokens)} tokens and "
                f"{len(beats)} beats (need equal lengths, at least 2)"
            )
        yield Piece(
            rows["piece_id"][i], int(rows["transpose"][i]), tokens, beats, rows["bar_steps"][i]
        )


def shuffled_pieces(
    path: str | Path, generator: torch.Generator, buffer: int
) -> Iterator[tuple[int, Piece]]:
    """(epoch, piece) forever: each epoch is one pass over the file, its row groups in a new
    random order, through a shuffle buffer. The file is sorted by piece, so without the group
    order a stretch of training met one collection at a time (a model trained for part of an
    epoch on music21's corpus saw mostly the first folk collection)."""
    parquet = pq.ParquetFile(path)
    epoch = 0
    while True:
        pool: list[Piece] = []
        seen = 0
        order = torch.randperm(parquet.num_row_groups, generator=generator).tolist()
        groups = (parquet.read_row_group(group, columns=COLUMNS) for group in order)
        for piece in (piece for table in groups for piece in _pieces(table, path)):
            seen += 1
            pool.append(piece)
            if len(pool) >= buffer:
                yield epoch, _pop_random(pool, generator)
        if not seen:
            raise ValueError(f"{path}: no pieces to train on")
        while pool:
            yield epoch, _pop_random(pool, generator)
        epoch += 1


def _pop_random(pool: list[Piece], generator: torch.Generator) -> Piece:
    index = int(torch.randint(len(pool), (1,), generator=generator))
    pool[index], pool[-1] = pool[-1], pool[index]
    return pool.pop()


@dataclass
class Segment:
    tokens: torch.Tensor  # (B, L + 1): inputs are [:, :-1], targets [:, 1:]
    beats: torch.Tensor
    bar_steps: torch.Tensor
    epoch: int


def lane_segments(
    pieces: Iterator[tuple[int, Piece]], batch_size: int, seg_len: int
) -> Iterator[Segment]:
    """Pieces laid end to end into `batch_size` lanes, cut into consecutive segments."""
    lanes = [[np.zeros((3, 0), dtype=np.int64)] for _ in range(batch_size)]
    lengths = [0] * batch_size
    epoch = 0
    while True:
        while min(lengths) < seg_len + 1:
            epoch, piece = next(pieces)
            lane = lengths.index(min(lengths))
            bar = np.full(len(piece.tokens), piece.bar_steps, dtype=np.int64)
            lanes[lane].append(np.stack([piece.tokens, piece.beats, bar]))
            lengths[lane] += len(piece.tokens)
        rows = []
        for lane in range(batch_size):
            joined = np.concatenate(lanes[lane], axis=1)
            rows.append(joined[:, : seg_len + 1])
            # The last target of this segment is the first input of the next.
            lanes[lane] = [joined[:, seg_len:]]
            lengths[lane] = joined.shape[1] - seg_len
        block = torch.from_numpy(np.stack(rows))  # (B, 3, L + 1)
        yield Segment(block[:, 0], block[:, 1], block[:, 2], epoch)


def targets_of(tokens: torch.Tensor) -> torch.Tensor:
    """Next-token targets; a bos (the start of the next piece in a lane) and pad are not scored."""
    targets = tokens[:, 1:].clone()
    targets[(targets == BOS) | (targets == PAD)] = IGNORE
    return targets


def first_pieces(
    path: str | Path, generator: torch.Generator, buffer: int, max_tokens: int
) -> Iterator[Piece]:
    """The pieces a training stream with this generator meets first, up to `max_tokens` tokens,
    each at most once (one epoch at most): a baseline's share of the same token budget."""
    seen = 0
    for epoch, piece in shuffled_pieces(path, generator, buffer):
        if epoch > 0 or seen >= max_tokens:
            return
        seen += len(piece.tokens)
        yield piece
