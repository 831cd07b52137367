"""The smoothed n-gram baseline: a proper distribution, the discounting formula, scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.symbolic.data import Piece
from models.symbolic.ngram import NGram


def piece(tokens, transpose=0) -> Piece:
    tokens = np.array(tokens)
    return Piece("p", transpose, tokens, np.zeros_like(tokens), 16)


def test_distributions_sum_to_one_and_never_vanish():
    model = NGram(vocab_size=10, order=3).fit([np.array([1, 4, 5, 4, 5, 4, 6, 2])])
    for context in [(), (1,), (4,), (4, 5), (9, 9), (5, 4)]:
        probs = model.distribution(context)
        assert probs.sum() == pytest.approx(1.0)
        assert (probs > 0).all()


def test_absolute_discounting_by_hand():
    model = NGram(vocab_size=4, order=2, discount=0.5).fit([np.array([1, 3, 3, 2])])
    # Unigram level (context ()): targets 3, 3, 2 -> c = 3, two distinct followers.
    unigram = np.full(4, 0.25) * (0.5 * 2 / 3)
    unigram[3] += (2 - 0.5) / 3
    unigram[2] += (1 - 0.5) / 3
    np.testing.assert_allclose(model.distribution(()), unigram)
    # After token 3: followers 3 and 2, once each.
    after3 = unigram * (0.5 * 2 / 2)
    after3[3] += 0.5 / 2
    after3[2] += 0.5 / 2
    np.testing.assert_allclose(model.distribution((3,)), after3)
    # An unseen context backs off to the unigram distribution.
    np.testing.assert_allclose(model.distribution((0,)), unigram)


def test_a_repeated_pattern_is_learned():
    pattern = [1] + [5, 6, 7, 8] * 20 + [2]
    model = NGram(vocab_size=12, order=3).fit([np.array(pattern)])
    scores = model.score([piece(pattern), piece(pattern, transpose=3)])
    assert scores["accuracy"] > 0.9
    assert scores["nll"] < 0.3
    assert scores["tokens"] == 2 * (len(pattern) - 1)
    assert set(scores["by_transpose"]) == {"0", "3"}
    surprise = model.score([piece([1, 9, 10, 11, 2])])
    assert surprise["nll"] > 2.0
    assert math.isclose(surprise["ppl"], math.exp(surprise["nll"]))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="order"):
        NGram(10, order=0)
