"""Musicality figures (MusPy's definitions) on small note tables worked out by hand."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import pytest

from datasets.symbolic.musicality import (
    best_scale,
    empty_beat_rate,
    empty_measure_rate,
    groove_consistency,
    in_key_fraction,
    musicality,
    n_pitch_classes_used,
    n_pitches_used,
    notes_per_beat,
    pitch_class_entropy,
    pitch_entropy,
    pitch_range,
    polyphony,
    polyphony_rate,
    scale_consistency,
    scale_pitch_classes,
)
from datasets.symbolic.notes import note_table

C_MAJOR_SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


def table(
    notes: list[tuple[float, float, int]],
    drums: Sequence[tuple[float, float, int]] = (),
    ts: tuple[int, int] = (4, 4),
    tracks: list[int] | None = None,
) -> pd.DataFrame:
    """A note table from (onset, duration, pitch) triples, plus drum notes on track 9."""
    rows = [*notes, *drums]
    n = len(rows)
    return note_table(
        {
            "onset": [r[0] for r in rows],
            "duration": [r[1] for r in rows],
            "pitch": [r[2] for r in rows],
            "velocity": [80] * n,
            "track": (tracks or [0] * len(notes)) + [9] * len(drums),
            "program": [0] * n,
            "is_drum": [False] * len(notes) + [True] * len(drums),
            "tempo": [120.0] * n,
            "ts_num": [ts[0]] * n,
            "ts_den": [ts[1]] * n,
        }
    )


def melody(pitches: list[int], beats: float = 1.0) -> pd.DataFrame:
    """One note after another, each `beats` long, from 0."""
    return table([(i * beats, beats, p) for i, p in enumerate(pitches)])


def test_c_major_scale():
    notes = melody(C_MAJOR_SCALE)
    # Pitch classes: C twice, six others once, out of 8: -(1/4 log2 1/4 + 6/8 log2 1/8).
    assert pitch_class_entropy(notes) == pytest.approx(0.25 * 2 + 0.75 * 3)
    assert pitch_entropy(notes) == pytest.approx(3.0)  # 8 pitches once each
    assert pitch_range(notes) == 12
    assert n_pitches_used(notes) == 8
    assert n_pitch_classes_used(notes) == 7
    assert scale_consistency(notes) == 1.0
    # C major and A minor hold the same classes; the major one comes first.
    assert best_scale(notes) == (0, "major")
    assert polyphony(notes) == 1.0
    assert polyphony_rate(notes) == 0.0
    assert empty_beat_rate(notes) == 0.0
    assert empty_measure_rate(notes) == 0.0
    assert groove_consistency(notes) == 1.0  # two measures of four quarter notes
    assert notes_per_beat(notes) == 1.0


def test_chromatic_run():
    notes = melody(list(range(60, 72)), beats=0.5)
    assert pitch_class_entropy(notes) == pytest.approx(math.log2(12))
    assert pitch_class_entropy(notes) == pytest.approx(3.585, abs=1e-3)
    assert scale_consistency(notes) == pytest.approx(7 / 12)
    assert n_pitch_classes_used(notes) == 12
    assert pitch_range(notes) == 11
    assert notes_per_beat(notes) == 2.0


def test_harmonic_minor_is_not_one_of_the_scales():
    # A harmonic minor: G# is in neither A natural minor nor C major, and no major or natural
    # minor scale holds all 7 classes, so 7 of 8 notes at best.
    notes = melody([69, 71, 72, 74, 76, 77, 80, 81])
    assert scale_consistency(notes) == pytest.approx(7 / 8)


def test_in_key_fraction_checks_a_continuation_against_its_prompts_key():
    prompt = melody(C_MAJOR_SCALE)
    root, mode = best_scale(prompt)
    key = scale_pitch_classes(root, mode)
    assert key == frozenset({0, 2, 4, 5, 7, 9, 11})
    assert in_key_fraction(melody([67, 69, 71, 72]), key) == 1.0
    assert in_key_fraction(melody([66, 68, 70, 72]), key) == 0.25
    # The C major scale in G major: F is out, 7 of 8 notes in.
    assert in_key_fraction(prompt, scale_pitch_classes(7, "major")) == pytest.approx(7 / 8)
    assert scale_pitch_classes(9, "minor") == key
    with pytest.raises(ValueError, match="mode"):
        scale_pitch_classes(0, "dorian")


def test_polyphony_of_a_four_voice_chord():
    chord = table([(0.0, 4.0, p) for p in (60, 64, 67, 72)])
    assert polyphony(chord) == 4.0
    assert polyphony_rate(chord) == 1.0  # 4 > 2 pitches at every step
    assert polyphony_rate(chord, threshold=4) == 0.0
    # The chord for 2 beats, then one note for 2: (8 steps x 4 + 8 steps x 1) / 16 sounding.
    then_one = table([*((0.0, 2.0, p) for p in (60, 64, 67, 72)), (2.0, 2.0, 60)])
    assert polyphony(then_one) == 2.5
    assert polyphony_rate(then_one) == 0.5


def test_polyphony_counts_a_pitch_doubled_in_two_tracks_once():
    doubled = table([(0.0, 1.0, 60), (0.0, 1.0, 60), (0.0, 1.0, 64)], tracks=[0, 1, 0])
    assert polyphony(doubled) == 2.0


def test_polyphony_counts_silent_steps_in_the_rate_only():
    # Two chords of 3 with a beat of rest between: 8 of 12 steps sound, all with 3 pitches.
    notes = table([(t, 1.0, p) for t in (0.0, 2.0) for p in (60, 64, 67)])
    assert polyphony(notes) == 3.0
    assert polyphony_rate(notes) == pytest.approx(8 / 12)


def test_a_note_shorter_than_a_step_still_sounds_one():
    grace = table([(0.0, 0.0, 62), (0.0, 1.0, 60)])
    assert polyphony(grace) == pytest.approx((2 + 1 + 1 + 1) / 4)


def test_empty_beats_and_measures():
    # A whole-note bar, a bar of rest, a whole-note bar: 4 of 12 beats and 1 of 3 measures empty.
    notes = table([(0.0, 4.0, 60), (8.0, 4.0, 62)])
    assert empty_beat_rate(notes) == pytest.approx(4 / 12)
    assert empty_measure_rate(notes) == pytest.approx(1 / 3)
    # A note ending on a beat does not reach into the next one.
    assert empty_beat_rate(table([(0.0, 1.0, 60), (5.0, 1.0, 62)])) == pytest.approx(4 / 6)


def test_measures_follow_the_time_signature():
    notes = [(0.0, 3.0, 60), (6.0, 3.0, 62)]
    assert empty_measure_rate(table(notes, ts=(3, 4))) == pytest.approx(1 / 3)
    assert empty_measure_rate(table(notes, ts=(4, 4))) == 0.0  # bars 0-4, 4-8, 8-9 all touched
    assert empty_measure_rate(table(notes, ts=(6, 8))) == pytest.approx(1 / 3)


def test_groove_consistency():
    quarters = [(t, 1.0, 60) for t in (0.0, 1.0, 2.0, 3.0)]
    offbeats = [(t, 0.5, 62) for t in (4.5, 5.5, 6.5, 7.5)]
    # Disjoint onsets: at 4 steps a beat the measures differ at 8 of 16 steps.
    assert groove_consistency(table(quarters + offbeats)) == 0.5
    # At 2 steps a beat, at all 8 of 8.
    assert groove_consistency(table(quarters + offbeats), resolution=2) == 0.0
    # Measure 1 starts notes at beats 0-3, measure 2 only at beat 4: 3 of 16 steps differ.
    one_note = table([*quarters, (4.0, 4.0, 60)])
    assert groove_consistency(one_note) == pytest.approx(1 - 3 / 16)
    # Three measures, A B A: 8 + 8 differences over 2 pairs of 16 steps.
    again = [(t + 8.0, 1.0, 60) for t in (0.0, 1.0, 2.0, 3.0)]
    assert groove_consistency(table(quarters + offbeats + again)) == 0.5
    # In 3/4 a measure is 12 steps: the same quarter-note rhythm in every bar.
    waltz = table([(float(t), 1.0, 60) for t in range(6)], ts=(3, 4))
    assert groove_consistency(waltz) == 1.0
    assert math.isnan(groove_consistency(table(quarters)))  # one measure: no neighbours


def test_drums_are_ignored_by_pitch_figures_and_counted_by_rhythm():
    kit = [(float(t), 0.25, 36 + t % 10) for t in range(12)]
    alone = melody(C_MAJOR_SCALE)
    with_drums = table([(i, 1.0, p) for i, p in enumerate(C_MAJOR_SCALE)], drums=kit)
    for figure in (
        "pitch_range",
        "n_pitches_used",
        "n_pitch_classes_used",
        "pitch_entropy",
        "pitch_class_entropy",
        "scale_consistency",
        "polyphony",
    ):
        assert musicality(with_drums)[figure] == musicality(alone)[figure], figure
    # The drums carry the piece on to beat 11.25: beats 8-11 sound, with no pitch.
    assert empty_beat_rate(with_drums) == 0.0
    assert polyphony_rate(with_drums) == 0.0
    assert notes_per_beat(with_drums) == pytest.approx(8 / 11.25)
    only_drums = table([], drums=kit)
    assert math.isnan(pitch_class_entropy(only_drums))
    assert math.isnan(scale_consistency(only_drums))
    assert math.isnan(polyphony(only_drums))
    assert best_scale(only_drums) is None
    assert groove_consistency(only_drums) == 1.0  # a quarter-note pulse in all three measures


def test_empty_table_is_nan():
    figures = musicality(table([]))
    assert figures["n_pitches_used"] == 0.0
    assert figures["n_pitch_classes_used"] == 0.0
    undefined = {k: v for k, v in figures.items() if not k.startswith("n_pitch")}
    assert all(math.isnan(v) for v in undefined.values()), undefined
    assert best_scale(table([])) is None
    assert math.isnan(in_key_fraction(table([]), range(12)))


def test_musicality_returns_every_figure_as_a_float():
    figures = musicality(melody(C_MAJOR_SCALE), resolution=8)
    assert set(figures) == {
        "pitch_range",
        "n_pitches_used",
        "n_pitch_classes_used",
        "pitch_entropy",
        "pitch_class_entropy",
        "scale_consistency",
        "polyphony",
        "polyphony_rate",
        "empty_beat_rate",
        "empty_measure_rate",
        "groove_consistency",
        "notes_per_beat",
    }
    assert all(isinstance(v, float) for v in figures.values())
    with pytest.raises(ValueError, match="resolution"):
        musicality(melody(C_MAJOR_SCALE), resolution=0)
