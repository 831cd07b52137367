"""Key augmentation and splits: 12 keys, k then -k, out-of-range rule, one split per piece."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets.splits import split_pieces
from datasets.symbolic.augment import KEYS, transpose, transposed_tokens
from datasets.symbolic.tokenizer import Vocab, decode, encode, quantize

VOCAB = Vocab()


def _piece(seed: int, n: int = 80, low: int = 30, high: int = 100):
    rng = np.random.default_rng(seed)
    q = quantize(rng.uniform(0, 30, n), rng.uniform(0.1, 3, n), rng.integers(low, high, n), 4, 64)
    return q.onset, q.duration, q.pitch


def test_twelve_keys_from_minus_five_to_plus_six():
    assert tuple(range(-5, 7)) == KEYS
    assert len(KEYS) == 12


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(-12, 12))
def test_transpose_k_then_minus_k_is_identity_for_in_range_notes(seed, k):
    onset, duration, pitch = _piece(seed, low=0, high=128)
    o, d, p, dropped = transpose(onset, duration, pitch, k)
    o2, d2, p2, dropped2 = transpose(o, d, p, -k)
    in_range = (pitch + k >= 0) & (pitch + k <= 127)
    assert dropped == int((~in_range).sum())
    assert dropped2 == 0
    np.testing.assert_array_equal(p2, pitch[in_range])
    np.testing.assert_array_equal(o2, onset[in_range])
    np.testing.assert_array_equal(d2, duration[in_range])


def test_fast_path_equals_encoding_each_transposed_key():
    onset, duration, pitch = _piece(1)
    for k, tokens, beats, dropped in transposed_tokens(onset, duration, pitch, VOCAB):
        want_tokens, want_beats = encode(onset, duration, pitch + k, VOCAB)
        np.testing.assert_array_equal(tokens, want_tokens)
        np.testing.assert_array_equal(beats, want_beats)
        assert dropped == 0
        np.testing.assert_array_equal(np.sort(decode(tokens, VOCAB)[2]), np.sort(pitch + k))


def test_notes_pushed_out_of_range_are_dropped_and_counted():
    onset, duration, pitch = np.array([0, 0, 4]), np.array([4, 4, 4]), np.array([2, 60, 125])
    results = {k: (t, n) for k, t, _, n in transposed_tokens(onset, duration, pitch, VOCAB)}
    assert results[-5][1] == 1
    assert results[6][1] == 1
    assert results[0][1] == 0
    assert decode(results[-5][0], VOCAB)[2].tolist() == [55, 120]
    assert decode(results[6][0], VOCAB)[2].tolist() == [8, 66]
    assert decode(results[2][0], VOCAB)[2].tolist() == [4, 62, 127]


def test_splits_are_by_piece_deterministic_and_order_free():
    pieces = [f"piece{i:03d}.mid" for i in range(50)]
    a = split_pieces(pieces, seed=3, valid_fraction=0.1, test_fraction=0.2)
    assert a == split_pieces(list(reversed(pieces)), seed=3, valid_fraction=0.1, test_fraction=0.2)
    counts = {s: list(a.values()).count(s) for s in ("train", "valid", "test")}
    assert counts == {"train": 35, "valid": 5, "test": 10}
    assert a != split_pieces(pieces, seed=4, valid_fraction=0.1, test_fraction=0.2)


def test_small_corpora_still_get_a_valid_and_test_piece():
    splits = split_pieces(["a", "b", "c", "d"], valid_fraction=0.1, test_fraction=0.1)
    assert sorted(splits.values()) == ["test", "train", "train", "valid"]
