"""Key augmentation: every piece in all 12 keys, transposed -5..+6 semitones.

Rule for notes pushed out of range: a transposed note outside [low, high] is dropped, and the
count is reported per transposition. Dropping (rather than folding by an octave) never creates a
second note at the same onset and pitch, and leaves every in-range note exactly where it was, so
transposing by k then -k gives back all the notes that stayed in range.

`transposed_tokens` is the fast path: transposition moves pitch tokens only (the order inside a
group stays ascending), so 12 keys cost 12 vectorized additions unless a note leaves the range,
in which case that key is re-encoded from notes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from datasets.symbolic.tokenizer import Vocab, encode

KEYS: tuple[int, ...] = tuple(range(-5, 7))


def transpose(
    onset: np.ndarray,
    duration: np.ndarray,
    pitch: np.ndarray,
    semitones: int,
    low: int = 0,
    high: int = 127,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Shift pitches by `semitones`; returns the notes that stay in range and how many left it."""
    moved = np.asarray(pitch) + semitones
    keep = (moved >= low) & (moved <= high)
    return (
        np.asarray(onset)[keep],
        np.asarray(duration)[keep],
        moved[keep],
        int((~keep).sum()),
    )


def transposed_tokens(
    onset_steps: np.ndarray,
    duration_steps: np.ndarray,
    pitch: np.ndarray,
    vocab: Vocab,
    keys: Sequence[int] = KEYS,
    low: int = 0,
    high: int = 127,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
    """(semitones, tokens, beats, n_dropped) for each key of quantized, deduplicated notes."""
    pitch = np.asarray(pitch, dtype=np.int64)
    tokens, beats = encode(onset_steps, duration_steps, pitch, vocab)
    is_pitch = ((tokens >= vocab.pitch_offset) & (tokens < vocab.duration_offset)).astype(np.int32)
    lowest, highest = (int(pitch.min()), int(pitch.max())) if len(pitch) else (low, high)
    for semitones in keys:
        if lowest + semitones >= low and highest + semitones <= high:
            yield semitones, tokens + is_pitch * np.int32(semitones), beats, 0
        else:
            o, d, p, dropped = transpose(onset_steps, duration_steps, pitch, semitones, low, high)
            key_tokens, key_beats = encode(o, d, p, vocab)
            yield semitones, key_tokens, key_beats, dropped
