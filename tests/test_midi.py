"""MIDI reading and writing on music21's own MIDI files; bad files become RejectedInput."""

from __future__ import annotations

from pathlib import Path

import music21
import numpy as np
import pandas as pd
import pytest

from datasets.io import RejectedInput
from datasets.symbolic.midi import read_midi, write_midi
from datasets.symbolic.notes import NOTE_COLUMNS, NOTE_DTYPES
from datasets.symbolic.tokenizer import Vocab, decode, encode, quantize

MUSIC21 = Path(music21.__file__).parent
MIDI_FILES = sorted((MUSIC21 / "midi" / "testPrimitive").glob("*.mid")) + sorted(
    (MUSIC21 / "omr").glob("k525*.mid")
)
VOCAB = Vocab()


def test_the_music21_midi_files_are_there():
    assert len(MIDI_FILES) >= 20


@pytest.mark.parametrize("path", MIDI_FILES, ids=lambda p: p.name)
def test_real_midi_parses_and_round_trips(path, tmp_path):
    notes = read_midi(path)
    assert list(notes.columns) == NOTE_COLUMNS
    assert {c: str(t) for c, t in notes.dtypes.items()} == NOTE_DTYPES
    assert len(notes) > 0
    assert (notes["duration"] >= 0).all()
    assert notes["pitch"].between(0, 127).all()
    assert (notes["tempo"] > 0).all()

    pitched = notes[~notes["is_drum"]]
    q = quantize(
        pitched["onset"], pitched["duration"], pitched["pitch"], VOCAB.steps_per_beat,
        VOCAB.max_duration,
    )  # fmt: skip
    tokens, _ = encode(q.onset, q.duration, q.pitch, VOCAB)
    decoded = decode(tokens, VOCAB)
    for got, want in zip(decoded, q[:3], strict=True):
        np.testing.assert_array_equal(got, want)

    # Quantized notes -> MIDI file -> notes -> tokens gives the same tokens.
    table = pd.DataFrame(
        {"onset": q.onset / VOCAB.steps_per_beat, "duration": q.duration / 4, "pitch": q.pitch}
    )
    written = write_midi(table, tmp_path / "round.mid", tempo_bpm=90.0)
    back = read_midi(written)
    assert back["tempo"].round(3).eq(90.0).all()
    q2 = quantize(back["onset"], back["duration"], back["pitch"], 4, VOCAB.max_duration)
    assert q2.n_moved == 0
    assert q2.n_merged == 0
    np.testing.assert_array_equal(encode(q2.onset, q2.duration, q2.pitch, VOCAB)[0], tokens)


def test_write_midi_keeps_tracks_programs_and_time_signature(tmp_path):
    notes = read_midi(MIDI_FILES[0])
    notes = pd.concat([notes, notes.assign(track=1, program=40, pitch=notes["pitch"] - 12)])
    notes = notes.assign(ts_num=3, ts_den=4)
    back = read_midi(write_midi(notes, tmp_path / "two.mid"))
    assert sorted(back["track"].unique()) == [0, 1]
    assert back.groupby("track")["program"].first().tolist() == [0, 40]
    assert (back["ts_num"] == 3).all()
    assert len(back) == len(notes)


def test_drum_tracks_are_flagged_not_lost(tmp_path):
    notes = pd.DataFrame(
        {
            "onset": [0.0, 0.0, 1.0],
            "duration": [1.0, 0.25, 0.25],
            "pitch": [60, 36, 38],
            "track": [0, 1, 1],
            "program": [0, 0, 0],
            "is_drum": [False, True, True],
        }
    )
    back = read_midi(write_midi(notes, tmp_path / "drums.mid"))
    assert back["is_drum"].tolist() == [True, False, True]
    assert back["pitch"].tolist() == [36, 60, 38]


def test_write_midi_is_deterministic(tmp_path):
    notes = read_midi(MIDI_FILES[2])
    a = write_midi(notes, tmp_path / "a.mid").read_bytes()
    assert a == write_midi(notes, tmp_path / "b.mid").read_bytes()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, this is not music", "not a MIDI file"),
        (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x10\x00\x00\x90", "corrupt"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_bad_files_raise_rejected_input_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(RejectedInput, match=reason) as info:
        read_midi(path)
    assert info.value.path == str(path)
    assert reason in info.value.reason


def test_a_midi_file_without_notes_is_rejected(tmp_path):
    from symusic import Score, Track

    score = Score(480)
    score.tracks.append(Track("empty", 0, False))
    path = tmp_path / "silent.mid"
    score.dump_midi(path)
    with pytest.raises(RejectedInput, match="no notes"):
        read_midi(path)


def test_truncated_real_file_is_rejected(tmp_path):
    data = MIDI_FILES[-1].read_bytes()
    path = tmp_path / "cut.mid"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RejectedInput, match="corrupt or truncated"):
        read_midi(path)
