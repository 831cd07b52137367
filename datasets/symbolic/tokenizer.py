"""Notes <-> tokens on a steps-per-beat grid, numpy-vectorized.

Grammar (see docs/ARCHITECTURE.md): `bos (pitch dur)+ (shift+ (pitch dur)+)* eos`. Notes that
start together form a group in ascending pitch; shift tokens move time forward between groups
(gaps longer than `max_shift` are chained). Leading shifts place a first group that does not
start at step 0.

`beats[i]` is the time cursor (grid steps from the piece start) after reading token i: the
onset of its group for pitch and duration tokens, the time reached for a shift. It is the step
at which the next note would start, which is what a beat embedding needs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

import numpy as np

N_PITCHES = 128
TokenKind = Literal["special", "pitch", "duration", "shift"]


# The file a vocabulary is saved in, beside the tokens it made and in every model directory.
VOCAB_FILE = "vocab.json"


@dataclass(frozen=True)
class Vocab:
    """Token ids: pad, bos, eos, 128 pitches, durations 1..max_duration, shifts 1..max_shift."""

    steps_per_beat: int = 4
    max_duration: int = 64
    max_shift: int = 64

    pad = 0
    bos = 1
    eos = 2
    pitch_offset = 3

    def __post_init__(self) -> None:
        if min(self.steps_per_beat, self.max_duration, self.max_shift) < 1:
            raise ValueError(f"vocab sizes must be positive: {self}")

    @property
    def duration_offset(self) -> int:
        return self.pitch_offset + N_PITCHES

    @property
    def shift_offset(self) -> int:
        return self.duration_offset + self.max_duration

    @property
    def size(self) -> int:
        return self.shift_offset + self.max_shift

    def pitch_token(self, pitch: int) -> int:
        if not 0 <= pitch < N_PITCHES:
            raise ValueError(f"pitch {pitch} outside 0..127")
        return self.pitch_offset + pitch

    def duration_token(self, steps: int) -> int:
        if not 1 <= steps <= self.max_duration:
            raise ValueError(f"duration {steps} outside 1..{self.max_duration} steps")
        return self.duration_offset + steps - 1

    def shift_token(self, steps: int) -> int:
        if not 1 <= steps <= self.max_shift:
            raise ValueError(f"shift {steps} outside 1..{self.max_shift} steps")
        return self.shift_offset + steps - 1

    def kind_of(self, token: int) -> TokenKind:
        if 0 <= token < self.pitch_offset:
            return "special"
        if token < self.duration_offset:
            return "pitch"
        if token < self.shift_offset:
            return "duration"
        if token < self.size:
            return "shift"
        raise ValueError(f"token {token} outside vocabulary of size {self.size}")

    def to_json(self) -> str:
        info = {
            **asdict(self),
            "size": self.size,
            "pad": self.pad,
            "bos": self.bos,
            "eos": self.eos,
            "pitch_offset": self.pitch_offset,
            "duration_offset": self.duration_offset,
            "shift_offset": self.shift_offset,
        }
        return json.dumps(info, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        info = json.loads(text)
        return cls(
            steps_per_beat=int(info["steps_per_beat"]),
            max_duration=int(info["max_duration"]),
            max_shift=int(info["max_shift"]),
        )


def bar_steps(ts_num: int, ts_den: int, steps_per_beat: int) -> int:
    """Grid steps per bar; a beat is a quarter note, so 6/8 at 4 steps per beat is 12.

    One function for the tokens' `bar_steps` column and for generation's prompts, in this
    float order (`ts_num * 4 * steps_per_beat / ts_den`, the order the token tables were
    written with): another order can round differently on a `.5`.
    """
    return max(1, round(ts_num * 4 * steps_per_beat / ts_den))


class Quantized(NamedTuple):
    onset: np.ndarray  # int64 grid steps, sorted by (onset, pitch)
    duration: np.ndarray  # int64 grid steps, 1..max_duration
    pitch: np.ndarray  # int64
    n_moved: int  # notes whose onset or duration changed (rounded, lengthened, cut or clipped)
    n_merged: int  # notes dropped because another note had the same onset and pitch


def quantize(
    onset_beats: np.ndarray,
    duration_beats: np.ndarray,
    pitch: np.ndarray,
    steps_per_beat: int,
    max_duration: int | None = None,
) -> Quantized:
    """Round notes to the grid (duration at least one step, at most `max_duration`).

    Notes landing on the same (onset, pitch) merge into one, keeping the longest duration, and a
    note overlapping the next note of its pitch is cut where that one starts. `n_moved` counts
    the surviving notes whose onset or duration changed; `n_merged` the notes merged away.
    """
    exact_onset = np.asarray(onset_beats, dtype=np.float64) * steps_per_beat
    exact_duration = np.asarray(duration_beats, dtype=np.float64) * steps_per_beat
    pitch = np.asarray(pitch, dtype=np.int64)
    onset = np.rint(exact_onset).astype(np.int64)
    duration = np.maximum(np.rint(exact_duration).astype(np.int64), 1)
    if max_duration is not None:
        duration = np.minimum(duration, max_duration)
    # Sort by onset, pitch, then longest first, so the first of each (onset, pitch) run wins.
    order = np.lexsort((-duration, pitch, onset))
    onset, duration, pitch = onset[order], duration[order], pitch[order]
    exact_onset, exact_duration = exact_onset[order], exact_duration[order]
    keep = np.ones(len(onset), dtype=bool)
    keep[1:] = (onset[1:] != onset[:-1]) | (pitch[1:] != pitch[:-1])
    n_merged = int((~keep).sum())
    onset, duration, pitch = onset[keep], duration[keep], pitch[keep]
    exact_onset, exact_duration = exact_onset[keep], exact_duration[keep]
    # A note ends where the next note of its pitch starts: one key cannot sound twice at once,
    # and MIDI (a note-off per pitch) could not give the overlap back.
    by_pitch = np.lexsort((onset, pitch))
    same_pitch = pitch[by_pitch][1:] == pitch[by_pitch][:-1]
    room = np.where(same_pitch, np.diff(onset[by_pitch]), np.iinfo(np.int64).max)
    duration[by_pitch[:-1]] = np.minimum(duration[by_pitch[:-1]], room)
    moved = (np.abs(onset - exact_onset) > 1e-6) | (np.abs(duration - exact_duration) > 1e-6)
    return Quantized(onset, duration, pitch, int(moved.sum()), n_merged)


def encode(
    onset_steps: np.ndarray, duration_steps: np.ndarray, pitch: np.ndarray, vocab: Vocab
) -> tuple[np.ndarray, np.ndarray]:
    """Quantized notes -> (tokens, beats), both int32 and of equal length.

    Notes are sorted here; durations over `vocab.max_duration` are clipped (`quantize` with
    `max_duration` counts them). Duplicate (onset, pitch) notes are an error: quantize first.
    """
    onset = np.asarray(onset_steps, dtype=np.int64)
    duration = np.minimum(np.asarray(duration_steps, dtype=np.int64), vocab.max_duration)
    pitch = np.asarray(pitch, dtype=np.int64)
    if len(onset) and (onset.min() < 0 or duration.min() < 1):
        raise ValueError("onsets must be >= 0 and durations >= 1 step")
    if len(pitch) and (pitch.min() < 0 or pitch.max() >= N_PITCHES):
        raise ValueError("pitches must lie in 0..127")
    order = np.lexsort((pitch, onset))
    onset, duration, pitch = onset[order], duration[order], pitch[order]
    if np.any((np.diff(onset) == 0) & (np.diff(pitch) == 0)):
        raise ValueError("duplicate (onset, pitch) notes: quantize() merges them")

    previous = np.concatenate([[0], onset[:-1]])
    gap = onset - previous
    n_shift = -(-gap // vocab.max_shift)  # ceil; zero inside a group
    counts = n_shift + 2
    starts = 1 + np.cumsum(counts) - counts
    total = 2 + int(counts.sum())
    tokens = np.empty(total, dtype=np.int32)
    beats = np.empty(total, dtype=np.int32)
    tokens[0], beats[0] = vocab.bos, 0
    tokens[-1], beats[-1] = vocab.eos, onset[-1] if len(onset) else 0

    pitch_at = starts + n_shift
    tokens[pitch_at] = vocab.pitch_offset + pitch
    tokens[pitch_at + 1] = vocab.duration_offset + duration - 1
    beats[pitch_at] = onset
    beats[pitch_at + 1] = onset

    note_of_shift = np.repeat(np.arange(len(onset)), n_shift)
    index = np.arange(len(note_of_shift)) - np.repeat(np.cumsum(n_shift) - n_shift, n_shift)
    last = index == n_shift[note_of_shift] - 1
    remainder = gap[note_of_shift] - (n_shift[note_of_shift] - 1) * vocab.max_shift
    amount = np.where(last, remainder, vocab.max_shift)
    shift_at = starts[note_of_shift] + index
    tokens[shift_at] = vocab.shift_offset + amount - 1
    beats[shift_at] = np.minimum(
        previous[note_of_shift] + (index + 1) * vocab.max_shift, onset[note_of_shift]
    )
    return tokens, beats


def decode(tokens: np.ndarray, vocab: Vocab) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens -> (onset_steps, duration_steps, pitch), int64, sorted by (onset, pitch).

    Reads from after a leading bos up to the first eos (or the end); pad tokens are skipped and a
    pitch not followed by a duration (a cut-off sequence) is dropped.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    tokens = tokens[tokens != vocab.pad]
    if len(tokens) and tokens[0] == vocab.bos:
        tokens = tokens[1:]
    ends = np.flatnonzero(tokens == vocab.eos)
    if len(ends):
        tokens = tokens[: ends[0]]
    is_shift = (tokens >= vocab.shift_offset) & (tokens < vocab.size)
    cursor = np.cumsum(np.where(is_shift, tokens - vocab.shift_offset + 1, 0))
    is_pitch = (tokens >= vocab.pitch_offset) & (tokens < vocab.duration_offset)
    is_duration = (tokens >= vocab.duration_offset) & (tokens < vocab.shift_offset)
    at = np.flatnonzero(is_pitch[:-1] & is_duration[1:])
    onset = cursor[at]
    duration = tokens[at + 1] - vocab.duration_offset + 1
    pitch = tokens[at] - vocab.pitch_offset
    order = np.lexsort((pitch, onset))
    return onset[order], duration[order], pitch[order]


def grammar_mask(vocab: Vocab, previous_token: int, last_pitch: int | None = None) -> np.ndarray:
    """Which tokens may follow `previous_token` (bool array of `vocab.size`).

    After bos: pitch or shift. After pitch: duration. After duration: a pitch above the group's
    last pitch (`last_pitch`, when the caller tracks it; any pitch otherwise), shift or eos.
    After shift: pitch, shift or eos. After eos (or pad) only eos, so a finished sequence stays
    finished. Pad is never allowed.
    """
    mask = np.zeros(vocab.size, dtype=bool)
    pitches = slice(vocab.pitch_offset, vocab.duration_offset)
    shifts = slice(vocab.shift_offset, vocab.size)
    kind = vocab.kind_of(previous_token)
    if kind == "special" and previous_token == vocab.bos:
        mask[pitches] = True
        mask[shifts] = True
    elif kind == "special":
        mask[vocab.eos] = True
    elif kind == "pitch":
        mask[vocab.duration_offset : vocab.shift_offset] = True
    elif kind == "duration":
        lowest = 0 if last_pitch is None else last_pitch + 1
        mask[vocab.pitch_offset + lowest : vocab.duration_offset] = True
        mask[shifts] = True
        mask[vocab.eos] = True
    else:
        mask[pitches] = True
        mask[shifts] = True
        mask[vocab.eos] = True
    return mask
