"""Scoring next-token prediction: NLL per token (nats), perplexity and accuracy, per transposition.

Every piece is scored on its own: the targets are all its tokens after bos (eos included), and
each token is predicted from its own piece's past only. A model is run over the piece in
segments of its training length; a model with memory carries its memory from segment to segment
(Transformer-XL evaluation), a model without memory (the vanilla baseline) starts every segment
afresh, which is the context it was trained with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.symbolic.data import IGNORE, PAD, Piece, read_pieces, targets_of
from models.symbolic.transformer import MusicTransformer


class Tally:
    """Sums of NLL, hits and counts, overall and per transposition."""

    def __init__(self) -> None:
        self.sums: dict[int, list[float]] = {}

    def add(self, transpose: int, nll: float, correct: int, count: int) -> None:
        total = self.sums.setdefault(transpose, [0.0, 0, 0])
        total[0] += nll
        total[1] += correct
        total[2] += count

    def result(self) -> dict[str, Any]:
        def summary(nll: float, correct: float, count: float) -> dict[str, float | None]:
            # None (JSON null), not NaN, for an empty split: metrics.json is strict JSON.
            if not count:
                return {"nll": None, "ppl": None, "accuracy": None, "tokens": 0}
            return {
                "nll": float(nll / count),
                "ppl": math.exp(nll / count),
                "accuracy": float(correct / count),
                "tokens": int(count),
            }

        totals = np.array(list(self.sums.values()), dtype=np.float64).reshape(-1, 3).sum(axis=0)
        out = summary(*totals)
        out["by_transpose"] = {str(t): summary(*self.sums[t]) for t in sorted(self.sums)}
        return out


def pad_batch(pieces: list[Piece]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) tokens, beats and bar steps. Causal attention never looks right."""
    length = max(len(p.tokens) for p in pieces)
    tokens = np.full((len(pieces), length), PAD, dtype=np.int64)
    beats = np.zeros_like(tokens)
    bar_steps = np.zeros_like(tokens)
    for i, piece in enumerate(pieces):
        n = len(piece.tokens)
        tokens[i, :n], beats[i, :n], bar_steps[i, :] = piece.tokens, piece.beats, piece.bar_steps
    return torch.from_numpy(tokens), torch.from_numpy(beats), torch.from_numpy(bar_steps)


@torch.no_grad()
def token_nll(
    model: MusicTransformer, pieces: list[Piece]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token NLL in nats (B, T-1, float64), whether the likeliest token was the target, and
    which positions are targets; each piece scored on its own with memory across segments."""
    device = next(model.parameters()).device
    tokens, beats, bar_steps = (t.to(device) for t in pad_batch(pieces))
    targets = targets_of(tokens)
    seg_len = model.config.seg_len
    mems: list[torch.Tensor] = []
    losses, hits = [], []
    for start in range(0, tokens.shape[1] - 1, seg_len):
        stop = min(start + seg_len, tokens.shape[1] - 1)
        logits, mems = model(
            tokens[:, start:stop], beats[:, start:stop], bar_steps[:, start:stop], mems or None
        )
        logits = logits.float()
        target = targets[:, start:stop]
        loss = F.cross_entropy(
            logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none"
        )
        losses.append(loss.double())
        hits.append(logits.argmax(-1) == target)
    mask = targets != IGNORE
    return torch.cat(losses, dim=1), torch.cat(hits, dim=1) & mask, mask


def score_batch(model: MusicTransformer, pieces: list[Piece], tally: Tally) -> None:
    nll, hits, mask = token_nll(model, pieces)
    for i, piece in enumerate(pieces):
        tally.add(piece.transpose, nll[i].sum().item(), int(hits[i].sum()), int(mask[i].sum()))


def batched(pieces: Iterable[Piece], size: int) -> Iterable[list[Piece]]:
    iterator = iter(pieces)
    while chunk := list(islice(iterator, size)):
        yield chunk


def eval_pieces(
    path: str | Path, max_pieces: int | None = None, original_keys: bool = False
) -> Iterator[Piece]:
    """The pieces of a tokens file to score: the first `max_pieces`, and with `original_keys`
    only the untransposed ones (a large corpus's 12 keys cost 12x and add little)."""
    pieces = (p for p in read_pieces(path) if p.transpose == 0 or not original_keys)
    return islice(pieces, max_pieces)


def evaluate(
    model: MusicTransformer,
    path: str | Path,
    max_pieces: int | None = None,
    batch_size: int = 8,
    original_keys: bool = False,
) -> dict[str, Any]:
    """NLL, perplexity, accuracy and token count of `model` on a tokens Parquet file.

    Returns {"nll", "ppl", "accuracy", "tokens", "by_transpose": {"-5": {...}, ...}}.
    """
    was_training = model.training
    model.eval()
    tally = Tally()
    pieces = eval_pieces(path, max_pieces, original_keys)
    for chunk in batched(pieces, batch_size):
        score_batch(model, chunk, tally)
    model.train(was_training)
    return tally.result()
