"""Tokenizer: vocabulary, encode/decode round trips, the grammar, quantization counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets.symbolic.tokenizer import Vocab, decode, encode, grammar_mask, quantize

VOCAB = Vocab(steps_per_beat=4, max_duration=16, max_shift=8)


def test_vocab_layout_and_json_round_trip():
    vocab = Vocab()
    assert (vocab.pad, vocab.bos, vocab.eos) == (0, 1, 2)
    assert vocab.pitch_token(0) == 3
    assert vocab.pitch_token(127) == 130
    assert vocab.duration_token(1) == 131
    assert vocab.shift_token(1) == 131 + 64
    assert vocab.size == 3 + 128 + 64 + 64
    kinds = [vocab.kind_of(t) for t in (0, 2, 3, 130, 131, 194, 195, vocab.size - 1)]
    assert kinds == ["special"] * 2 + ["pitch"] * 2 + ["duration"] * 2 + ["shift"] * 2
    assert Vocab.from_json(vocab.to_json()) == vocab
    with pytest.raises(ValueError, match="outside vocabulary"):
        vocab.kind_of(vocab.size)


def test_encode_groups_chords_and_chains_long_shifts():
    tokens, beats = encode([0, 0, 20], [4, 2, 1], [64, 60, 62], VOCAB)
    expected = [
        VOCAB.bos,
        VOCAB.pitch_token(60), VOCAB.duration_token(2),
        VOCAB.pitch_token(64), VOCAB.duration_token(4),
        VOCAB.shift_token(8), VOCAB.shift_token(8), VOCAB.shift_token(4),
        VOCAB.pitch_token(62), VOCAB.duration_token(1),
        VOCAB.eos,
    ]  # fmt: skip
    assert tokens.tolist() == expected
    assert beats.tolist() == [0, 0, 0, 0, 0, 8, 16, 20, 20, 20, 20]
    assert tokens.dtype == np.int32
    assert beats.dtype == np.int32


def test_leading_rest_and_empty_piece():
    tokens, beats = encode([3], [1], [60], VOCAB)
    assert tokens.tolist()[:2] == [VOCAB.bos, VOCAB.shift_token(3)]
    assert [a.tolist() for a in decode(tokens, VOCAB)] == [[3], [1], [60]]
    tokens, beats = encode([], [], [], VOCAB)
    assert tokens.tolist() == [VOCAB.bos, VOCAB.eos]
    assert beats.tolist() == [0, 0]


def test_decode_tolerates_pad_missing_eos_and_cut_off_pitch():
    tokens, _ = encode([0, 4], [2, 2], [60, 62], VOCAB)
    padded = np.concatenate([tokens, [VOCAB.pad] * 3])
    assert [a.tolist() for a in decode(padded, VOCAB)] == [[0, 4], [2, 2], [60, 62]]
    cut = np.concatenate([tokens[:-1], [VOCAB.pitch_token(70)]])  # no eos, no duration
    assert [a.tolist() for a in decode(cut, VOCAB)] == [[0, 4], [2, 2], [60, 62]]


def test_encode_refuses_duplicates_and_bad_pitches():
    with pytest.raises(ValueError, match="duplicate"):
        encode([0, 0], [1, 2], [60, 60], VOCAB)
    with pytest.raises(ValueError, match=r"0\.\.127"):
        encode([0], [1], [128], VOCAB)


def test_quantize_counts_moved_merged_cut_and_clipped():
    q = quantize(
        np.array([0.0, 0.1, 0.0, 1.0, 2.0, 0.0, 1.0]),
        np.array([1.0, 0.5, 0.25, 0.01, 10.0, 2.0, 1.0]),
        np.array([60, 60, 64, 62, 65, 67, 67]),
        steps_per_beat=4,
        max_duration=16,
    )
    assert q.onset.tolist() == [0, 0, 0, 4, 4, 8]
    assert q.pitch.tolist() == [60, 64, 67, 62, 67, 65]
    # The merged note keeps the longest duration; the first 67 is cut where the next begins.
    assert q.duration.tolist() == [4, 1, 4, 1, 4, 16]
    assert q.n_merged == 1
    assert q.n_moved == 3  # 0.01 lengthened to one step, 67 cut, 10 beats clipped


notes_strategy = st.lists(
    st.tuples(
        st.floats(0, 40, allow_nan=False),
        st.floats(0, 6, allow_nan=False),
        st.integers(0, 127),
    ),
    max_size=60,
)


def _quantized(notes, vocab):
    onset, duration, pitch = (np.array(column) for column in zip(*notes, strict=True))
    return quantize(onset, duration, pitch, vocab.steps_per_beat, vocab.max_duration)


@settings(max_examples=200, deadline=None)
@given(notes=notes_strategy.filter(bool))
def test_property_decode_encode_is_quantize(notes):
    q = _quantized(notes, VOCAB)
    tokens, beats = encode(q.onset, q.duration, q.pitch, VOCAB)
    onset, duration, pitch = decode(tokens, VOCAB)
    np.testing.assert_array_equal(onset, q.onset)
    np.testing.assert_array_equal(duration, q.duration)
    np.testing.assert_array_equal(pitch, q.pitch)
    assert len(beats) == len(tokens)
    assert np.all(np.diff(beats) >= 0)


@settings(max_examples=100, deadline=None)
@given(notes=notes_strategy.filter(bool))
def test_property_every_encoding_follows_the_grammar(notes):
    q = _quantized(notes, VOCAB)
    tokens, _ = encode(q.onset, q.duration, q.pitch, VOCAB)
    last_pitch = None
    for previous, token in itertools.pairwise(tokens):
        kind = VOCAB.kind_of(int(previous))
        if kind == "shift":
            last_pitch = None
        gate = last_pitch if kind == "duration" else None
        assert grammar_mask(VOCAB, int(previous), gate)[token], (previous, token)
        if VOCAB.kind_of(int(token)) == "pitch":
            last_pitch = int(token) - VOCAB.pitch_offset


def test_grammar_mask_rules():
    v = VOCAB
    after_bos = grammar_mask(v, v.bos)
    assert after_bos[v.pitch_token(60)]
    assert after_bos[v.shift_token(1)]
    assert not after_bos[v.eos]
    after_pitch = grammar_mask(v, v.pitch_token(60))
    assert after_pitch.sum() == v.max_duration
    assert after_pitch[v.duration_token(1)]
    after_duration = grammar_mask(v, v.duration_token(2), last_pitch=60)
    assert not after_duration[v.pitch_token(60)]
    assert after_duration[v.pitch_token(61)]
    assert after_duration[v.eos]
    assert after_duration[v.shift_token(3)]
    assert grammar_mask(v, v.eos).tolist() == [i == v.eos for i in range(v.size)]
    for previous in range(v.size):
        assert not grammar_mask(v, previous)[v.pad]
