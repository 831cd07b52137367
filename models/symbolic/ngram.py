"""A smoothed n-gram baseline: interpolated absolute discounting (Ney, Essen & Kneser 1994).

    P_k(w | h) = max(c(h, w) - D, 0) / c(h)  +  D * N(h) / c(h) * P_{k-1}(w | h')

h is the last k tokens, h' the last k-1, c(h) the count of h as a context, N(h) the number of
distinct tokens seen after it, D the discount; a context never seen falls back to P_{k-1}, and
P_{-1} is uniform over the vocabulary, so every token has a probability above zero. Contexts
never reach back past a piece's own bos.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from models.symbolic.data import Piece
from models.symbolic.evaluate import Tally


class NGram:
    def __init__(self, vocab_size: int, order: int = 5, discount: float = 0.75) -> None:
        if order < 1 or not 0 < discount < 1:
            raise ValueError(f"need order >= 1 and 0 < discount < 1, got {order}, {discount}")
        self.vocab_size, self.order, self.discount = vocab_size, order, discount
        self.counts: list[defaultdict] = [
            defaultdict(lambda: defaultdict(int)) for _ in range(order)
        ]
        self.tables: list[dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, int]]] = []
        self.tokens_trained = 0

    def fit(self, sequences: Iterable[np.ndarray]) -> NGram:
        """Count every token of every sequence with each context length 0 .. order-1."""
        for seq in sequences:
            seq = [int(t) for t in seq]
            for i in range(1, len(seq)):
                for k in range(min(self.order, i + 1)):
                    self.counts[k][tuple(seq[i - k : i])][seq[i]] += 1
            self.tokens_trained += len(seq) - 1
        self.tables = [
            {
                context: (
                    np.fromiter(followers.keys(), dtype=np.int64),
                    np.fromiter(followers.values(), dtype=np.float64),
                    sum(followers.values()),
                )
                for context, followers in level.items()
            }
            for level in self.counts
        ]
        self.distribution.cache_clear()
        return self

    @lru_cache(maxsize=65536)  # noqa: B019 - one model per process; contexts repeat a lot
    def distribution(self, context: tuple[int, ...]) -> np.ndarray:
        """P(next token | context), a (vocab_size,) array summing to one."""
        probs = np.full(self.vocab_size, 1.0 / self.vocab_size)
        for k in range(min(len(context), self.order - 1) + 1):
            entry = self.tables[k].get(context[len(context) - k :])
            if entry is None:
                break  # a longer context containing this one was never seen either
            ids, counts, total = entry
            backoff = self.discount * len(ids) / total
            probs = probs * backoff
            probs[ids] += np.maximum(counts - self.discount, 0.0) / total
        return probs

    def score(self, pieces: Iterable[Piece]) -> dict:
        """NLL per token, perplexity and accuracy, the same fields as `music_eval.evaluate`."""
        tally = Tally()
        for piece in pieces:
            seq = [int(t) for t in piece.tokens]
            nll, correct = 0.0, 0
            for i in range(1, len(seq)):
                probs = self.distribution(tuple(seq[max(0, i - self.order + 1) : i]))
                nll -= math.log(probs[seq[i]])
                correct += int(np.argmax(probs) == seq[i])
            tally.add(piece.transpose, nll, correct, len(seq) - 1)
        return tally.result()
