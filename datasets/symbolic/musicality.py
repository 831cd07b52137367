"""Musicality figures of a note table, as MusPy defines them (Dong et al. 2020, muspy.metrics).

They let a generated piece be compared with real music on the same scale (a continuation with its
prompt, samples with the corpus): pitch statistics, tonality, polyphony, rhythm and silence.
Pure numpy/pandas, so any stage can call them.

Conventions, shared by every figure:
- Pitch-based figures (pitch range and counts, entropies, scales, polyphony, notes per beat)
  ignore drum notes, as MusPy does; the rhythm figures (empty beats and measures, groove) count
  every note, drums included, as MusPy does.
- Time runs from 0, the start of the piece and of its first measure: a slice cut out of a piece
  should have its onsets shifted to start at 0 first. A beat is a quarter note (the note table's
  unit); a measure lasts ts_num * 4 / ts_den beats, with the time signature in force at the first
  note held for the whole piece (MusPy's figures assume a constant time signature too). The
  table has no bar lines, so a pickup (anacrusis) shifts the true ones off this grid, as in MusPy.
- Time steps: onsets and offsets are rounded to `resolution` steps per beat; a note sounds from
  its onset step up to, not including, its offset step, and for at least one step.
- The piece lasts until the last note ends, and spans the beats and measures that time touches.
  MusPy counts one unit more (length // unit + 1) and lets a note that ends on a boundary touch
  the next unit, so a piece of two identical measures gets a groove consistency below 1
  (salu133445/muspy#73); here it gets 1. Pitch range is NaN, not MusPy's 0, without pitched
  notes. Otherwise the definitions are MusPy's.
- A figure with nothing to measure (no notes, no pitched notes, fewer than two measures) is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

MODES: tuple[str, ...] = ("major", "minor")
# The scales MusPy's scale consistency tries, on C: major and natural minor.
_SCALE_STEPS: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
}


def scale_pitch_classes(root: int, mode: str) -> frozenset[int]:
    """The 7 pitch classes of the major or natural minor scale on `root` (0 = C)."""
    if mode not in _SCALE_STEPS:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return frozenset((root + step) % 12 for step in _SCALE_STEPS[mode])


def _pitched(notes: pd.DataFrame) -> np.ndarray:
    """Pitches of the non-drum notes, as int64."""
    return notes["pitch"].to_numpy()[~notes["is_drum"].to_numpy(dtype=bool)].astype(np.int64)


def _steps(notes: pd.DataFrame, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Onset and offset steps on a grid of `resolution` steps per beat; every note lasts >= 1."""
    if resolution < 1:
        raise ValueError(f"resolution must be a positive integer, not {resolution}")
    onset = notes["onset"].to_numpy(dtype=np.float64)
    offset = onset + notes["duration"].to_numpy(dtype=np.float64)
    start = np.rint(onset * resolution).astype(np.int64)
    end = np.maximum(np.rint(offset * resolution).astype(np.int64), start + 1)
    return start, end


def _covered(first: np.ndarray, stop: np.ndarray, n: int) -> np.ndarray:
    """Which of n units [first, stop) intervals cover, by a difference array."""
    diff = np.zeros(n + 1, dtype=np.int64)
    np.add.at(diff, first, 1)
    np.add.at(diff, stop, -1)
    return np.cumsum(diff[:n]) > 0


def _measure_steps(notes: pd.DataFrame, resolution: int) -> tuple[int, int]:
    """A measure's length in steps as the fraction (numerator, denominator) = (res*4*num, den),
    so measure indices stay exact integer arithmetic in any meter (3/8, 5/16, ...)."""
    num = int(notes["ts_num"].iloc[0])
    den = int(notes["ts_den"].iloc[0])
    return resolution * 4 * num, den


def length_beats(notes: pd.DataFrame) -> float:
    """The piece's length in beats: from 0 to the end of its last note (drums included)."""
    if len(notes) == 0:
        return 0.0
    return float((notes["onset"] + notes["duration"]).max())


def pitch_range(notes: pd.DataFrame) -> float:
    """Highest minus lowest pitch of the pitched notes, in semitones; NaN without any."""
    pitches = _pitched(notes)
    return float(pitches.max() - pitches.min()) if len(pitches) else math.nan


def n_pitches_used(notes: pd.DataFrame) -> int:
    """Number of distinct MIDI pitches among the pitched notes."""
    return len(np.unique(_pitched(notes)))


def n_pitch_classes_used(notes: pd.DataFrame) -> int:
    """Number of distinct pitch classes (pitch mod 12) among the pitched notes."""
    return len(np.unique(_pitched(notes) % 12))


def _entropy(values: np.ndarray) -> float:
    """Shannon entropy in bits of the histogram of `values`, each note counting once."""
    if len(values) == 0:
        return math.nan
    _, counts = np.unique(values, return_counts=True)
    prob = counts / counts.sum()
    return float(-(prob * np.log2(prob)).sum())


def pitch_entropy(notes: pd.DataFrame) -> float:
    """Shannon entropy (bits) of the pitch histogram, counting pitched notes; NaN without any.

    0 for a single repeated pitch, log2(k) for k pitches used equally often."""
    return _entropy(_pitched(notes))


def pitch_class_entropy(notes: pd.DataFrame) -> float:
    """Shannon entropy (bits) of the pitch-class histogram, counting pitched notes; NaN without
    any. At most log2(12) = 3.585, for all 12 classes equally often: low values mean a clear key.
    """
    return _entropy(_pitched(notes) % 12)


def in_key_fraction(notes: pd.DataFrame, key_pitch_classes: Iterable[int]) -> float:
    """Fraction of pitched notes whose pitch class is in `key_pitch_classes` (MusPy's
    pitch-in-scale rate when they are a scale); NaN without pitched notes.

    With the prompt's `best_scale`, it says whether a continuation stays in the prompt's key."""
    pitches = _pitched(notes)
    if len(pitches) == 0:
        return math.nan
    in_key = np.zeros(12, dtype=bool)
    in_key[[pc % 12 for pc in key_pitch_classes]] = True
    return float(in_key[pitches % 12].mean())


def _scale_rates(notes: pd.DataFrame) -> list[tuple[float, int, str]]:
    """In-key fraction of each of the 24 scales, in MusPy's order: major roots 0..11, then
    minor roots 0..11."""
    return [
        (in_key_fraction(notes, scale_pitch_classes(root, mode)), root, mode)
        for mode in MODES
        for root in range(12)
    ]


def best_scale(notes: pd.DataFrame) -> tuple[int, str] | None:
    """(root, mode) of the major or natural minor scale holding the most pitched notes, the one
    scale_consistency measures; None without pitched notes.

    On a tie the first in MusPy's order wins (major before minor, lower root first), so of a
    relative pair (C major, A minor: the same 7 pitch classes) the major one is returned."""
    if len(_pitched(notes)) == 0:
        return None
    _, root, mode = max(_scale_rates(notes), key=lambda rate: rate[0])
    return root, mode


def scale_consistency(notes: pd.DataFrame) -> float:
    """The largest fraction of pitched notes in one of the 24 major or natural minor scales;
    NaN without pitched notes. 1.0 for diatonic music, 7/12 for an even chromatic run."""
    if len(_pitched(notes)) == 0:
        return math.nan
    return max(rate for rate, _, _ in _scale_rates(notes))


def _sounding(notes: pd.DataFrame, resolution: int) -> tuple[np.ndarray, int]:
    """Number of distinct pitches sounding at each time step (drums ignored; the same pitch in
    two tracks counts once, as in MusPy's binary pianoroll), and the piece's length in steps."""
    start, end = _steps(notes, resolution)
    n_steps = int(end.max()) if len(end) else 0
    pitched = ~notes["is_drum"].to_numpy(dtype=bool)
    pitch = notes["pitch"].to_numpy().astype(np.int64)[pitched]
    diff = np.zeros((n_steps + 1, 128), dtype=np.int64)
    np.add.at(diff, (start[pitched], pitch), 1)
    np.add.at(diff, (end[pitched], pitch), -1)
    pianoroll = np.cumsum(diff[:n_steps], axis=0) > 0
    return pianoroll.sum(axis=1), n_steps


def polyphony(notes: pd.DataFrame, resolution: int = 4) -> float:
    """Mean number of distinct pitches sounding, over the time steps where at least one is;
    NaN without pitched notes. 1 for a melody, 4 for a four-part chorale that never rests."""
    counts, _ = _sounding(notes, resolution)
    active = counts[counts > 0]
    return float(active.mean()) if len(active) else math.nan


def polyphony_rate(notes: pd.DataFrame, resolution: int = 4, threshold: int = 2) -> float:
    """Fraction of all time steps of the piece with more than `threshold` pitches sounding
    (MuseGAN's "polyphonicity"); NaN for an empty piece."""
    counts, n_steps = _sounding(notes, resolution)
    return float((counts > threshold).sum() / n_steps) if n_steps else math.nan


def empty_beat_rate(notes: pd.DataFrame, resolution: int = 4) -> float:
    """Fraction of the piece's beats (quarter notes) in which no note sounds; NaN if empty."""
    if len(notes) == 0:
        return math.nan
    start, end = _steps(notes, resolution)
    n_beats = -(-int(end.max()) // resolution)
    covered = _covered(start // resolution, (end - 1) // resolution + 1, n_beats)
    return float(1 - covered.mean())


def empty_measure_rate(notes: pd.DataFrame, resolution: int = 4) -> float:
    """Fraction of the piece's measures in which no note sounds; NaN if empty."""
    if len(notes) == 0:
        return math.nan
    start, end = _steps(notes, resolution)
    steps_num, steps_den = _measure_steps(notes, resolution)
    n_measures = -(-int(end.max()) * steps_den // steps_num)
    first = start * steps_den // steps_num
    stop = (end - 1) * steps_den // steps_num + 1
    return float(1 - _covered(first, stop, n_measures).mean())


def groove_consistency(notes: pd.DataFrame, resolution: int = 4) -> float:
    """1 - mean Hamming distance between consecutive measures' onset patterns (Wu & Yang 2020).

    A measure's pattern marks the grid steps (`resolution` per beat) where some note starts; the
    distance between two measures is the fraction of steps where their patterns differ, and the
    figure averages it over the T-1 pairs of neighbours. 1 for a rhythm repeated every measure;
    NaN for a piece shorter than two measures."""
    if len(notes) == 0:
        return math.nan
    start, end = _steps(notes, resolution)
    steps_num, steps_den = _measure_steps(notes, resolution)
    n_measures = -(-int(end.max()) * steps_den // steps_num)
    if n_measures < 2:
        return math.nan
    width = -(-steps_num // steps_den)  # grid steps per measure, a partial last step included
    measure = start * steps_den // steps_num
    position = (start * steps_den - measure * steps_num) // steps_den
    patterns = np.zeros((n_measures, width), dtype=bool)
    patterns[measure, position] = True
    distance = np.count_nonzero(patterns[:-1] != patterns[1:])
    return float(1 - distance / (width * (n_measures - 1)))


def notes_per_beat(notes: pd.DataFrame) -> float:
    """Pitched notes per beat of the piece's length: its density, to compare a continuation's
    with its prompt's. NaN for an empty piece."""
    length = length_beats(notes)
    return len(_pitched(notes)) / length if length > 0 else math.nan


def musicality(notes: pd.DataFrame, resolution: int = 4) -> dict[str, float]:
    """Every single-number figure of a note table, keyed by its function's name (NaN where
    undefined); `resolution` is the time steps per beat of the polyphony and rhythm figures."""
    return {
        "pitch_range": pitch_range(notes),
        "n_pitches_used": float(n_pitches_used(notes)),
        "n_pitch_classes_used": float(n_pitch_classes_used(notes)),
        "pitch_entropy": pitch_entropy(notes),
        "pitch_class_entropy": pitch_class_entropy(notes),
        "scale_consistency": scale_consistency(notes),
        "polyphony": polyphony(notes, resolution),
        "polyphony_rate": polyphony_rate(notes, resolution),
        "empty_beat_rate": empty_beat_rate(notes, resolution),
        "empty_measure_rate": empty_measure_rate(notes, resolution),
        "groove_consistency": groove_consistency(notes, resolution),
        "notes_per_beat": notes_per_beat(notes),
    }


def continuation_musicality(
    prompt: pd.DataFrame, continuation: pd.DataFrame, resolution: int = 4
) -> dict[str, float]:
    """A continuation held against its prompt: its own figures, the prompt's (prefixed
    `prompt_`), the share of its notes in the prompt's key (`in_prompt_key`, the key being the
    prompt's `best_scale`) and its density relative to the prompt's (`density_ratio`, notes per
    beat over the prompt's; 1 is the same texture). Both tables start their own clock at 0."""
    figures = musicality(continuation, resolution)
    figures |= {f"prompt_{k}": v for k, v in musicality(prompt, resolution).items()}
    key = best_scale(prompt)
    figures["in_prompt_key"] = (
        in_key_fraction(continuation, scale_pitch_classes(*key)) if key else float("nan")
    )
    prompt_density = notes_per_beat(prompt)
    figures["density_ratio"] = (
        notes_per_beat(continuation) / prompt_density if prompt_density > 0 else float("nan")
    )
    return figures
