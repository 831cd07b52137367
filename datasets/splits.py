"""Train/valid/test by piece, before augmentation, so all 12 keys of a piece share a split.

Pieces are ranked by a hash of (seed, piece id); the first `test_fraction` of the ranking is
test, the next `valid_fraction` valid, the rest train. The result depends only on the set of
piece ids and the seed, never on discovery order. A non-zero fraction gets at least one piece
when there are at least three pieces, so a small corpus still has something to validate on.
Pieces that come with a split of their own (the JSB chorales' published one) keep it
(`choose_splits`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

SPLITS: tuple[str, ...] = ("train", "valid", "test")


def piece_rank_key(piece_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}\0{piece_id}".encode()).hexdigest()


def _count(n: int, fraction: float) -> int:
    count = round(n * fraction)
    if fraction > 0 and n >= 3:
        count = max(count, 1)
    return count


def split_pieces(
    piece_ids: Iterable[str], seed: int = 0, valid_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, str]:
    """piece id -> "train" | "valid" | "test"."""
    if valid_fraction < 0 or test_fraction < 0 or valid_fraction + test_fraction >= 1:
        raise ValueError(
            f"fractions must be >= 0 and leave room for train: "
            f"valid={valid_fraction}, test={test_fraction}"
        )
    ranked = sorted(set(piece_ids), key=lambda piece: (piece_rank_key(piece, seed), piece))
    n_test = _count(len(ranked), test_fraction)
    n_valid = _count(len(ranked), valid_fraction)
    splits = {}
    for index, piece in enumerate(ranked):
        if index < n_test:
            splits[piece] = "test"
        elif index < n_test + n_valid:
            splits[piece] = "valid"
        else:
            splits[piece] = "train"
    return dict(sorted(splits.items()))


def split_groups(
    groups: dict[str, str], seed: int = 0, valid_fraction: float = 0.1, test_fraction: float = 0.1
) -> dict[str, str]:
    """item id -> split, where `groups` maps each item to its group (a speaker, a song) and a
    group's items share one split: the groups are split as pieces are (`split_pieces`)."""
    chosen = split_pieces(set(groups.values()), seed, valid_fraction, test_fraction)
    return {item: chosen[group] for item, group in sorted(groups.items())}


def choose_splits(
    records: Sequence[dict[str, Any]],
    seed: int,
    valid_fraction: float,
    test_fraction: float,
    limit: int | None = None,
) -> dict[str, str]:
    """piece id -> split for every parsed piece.

    Pieces with a split of their own (JSB) keep it, and `limit` keeps the first `limit` of
    each such split; the others are split by `split_pieces`.
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
