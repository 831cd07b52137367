"""MIDI files <-> note tables, with symusic (about 0.1 ms per chorale; music21 takes ~90 ms)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from symusic import Note, Score, Tempo, TimeSignature, Track

from datasets.io import RejectedInput, write_bytes_atomic
from datasets.symbolic.notes import DEFAULT_TEMPO, DEFAULT_VELOCITY, note_arrays

MIDI_SUFFIXES = (".mid", ".midi")
# 480 ticks per quarter holds 1/2, 1/3, 1/4, 1/5, 1/6, 1/8, 1/16 ... beats exactly.
WRITE_TPQ = 480


def _at_onsets(change_times: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    """Index of the last change at or before each onset (the first change covers earlier ones)."""
    return np.maximum(np.searchsorted(change_times, onsets, side="right") - 1, 0)


def score_note_arrays(score: Score, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """A symusic Score (tick time) as note columns (see `datasets.symbolic.notes.note_arrays`)."""
    tpq = score.ticks_per_quarter
    if tpq <= 0:
        raise RejectedInput(path, f"invalid MIDI header: {tpq} ticks per quarter note")
    parts: list[dict[str, np.ndarray]] = []
    for index, track in enumerate(score.tracks):
        if len(track.notes) == 0:
            continue
        arrays = track.notes.numpy()
        n = len(arrays["time"])
        parts.append(
            {
                "time": arrays["time"].astype(np.int64),
                "duration": arrays["duration"].astype(np.int64),
                "pitch": arrays["pitch"].astype(np.int16),
                "velocity": arrays["velocity"].astype(np.int16),
                "track": np.full(n, index, np.int16),
                "program": np.full(n, track.program, np.int16),
                "is_drum": np.full(n, track.is_drum, bool),
            }
        )
    if not parts:
        raise RejectedInput(path, "contains no notes (a MIDI file with only metadata or silence)")
    cols = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    tempos = score.tempos.numpy()
    zero = np.flatnonzero(tempos["mspq"] <= 0)
    if len(zero):
        # 0 us per quarter note is an infinite tempo (the standard's range is 1..2**24-1): the
        # file does not say how fast it goes, and guessing (clamping, or skipping the event
        # and keeping the previous tempo) would record a tempo the file never had.
        raise RejectedInput(
            path,
            f"invalid tempo: a tempo event of {int(tempos['mspq'][zero[0]])} microseconds per "
            f"quarter note at tick {int(tempos['time'][zero[0]])} (an infinite tempo; MIDI "
            "tempos are 1 or more); fix or remove that event",
        )
    if len(tempos["time"]):
        order = np.argsort(tempos["time"], kind="stable")
        qpm = 60_000_000.0 / tempos["mspq"][order].astype(np.float64)
        tempo = qpm[_at_onsets(tempos["time"][order], cols["time"])]
    else:
        tempo = np.full(len(cols["time"]), DEFAULT_TEMPO)
    signatures = score.time_signatures.numpy()
    if len(signatures["time"]):
        order = np.argsort(signatures["time"], kind="stable")
        at = _at_onsets(signatures["time"][order], cols["time"])
        ts_num = signatures["numerator"][order][at]
        ts_den = signatures["denominator"][order][at]
    else:
        ts_num = ts_den = np.full(len(cols["time"]), 4)

    return note_arrays(
        {
            "onset": cols["time"] / tpq,
            "duration": cols["duration"] / tpq,
            "pitch": cols["pitch"],
            "velocity": cols["velocity"],
            "track": cols["track"],
            "program": cols["program"],
            "is_drum": cols["is_drum"],
            "tempo": tempo,
            "ts_num": ts_num,
            "ts_den": ts_den,
        }
    )


def read_midi(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Parse a MIDI file into a note table; raises RejectedInput for files that are not MIDI."""
    return pd.DataFrame(read_midi_arrays(path), copy=False)


def read_midi_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """`read_midi` without the DataFrame: note columns as numpy arrays, for hot loops."""
    data = Path(path).read_bytes()
    if not data:
        raise RejectedInput(path, "empty file (0 bytes)")
    if not data.startswith(b"MThd"):
        raise RejectedInput(path, "not a MIDI file: it does not start with the 'MThd' header")
    try:
        score = Score.from_midi(data)
    except RuntimeError as exc:
        raise RejectedInput(path, f"corrupt or truncated MIDI file: {exc}") from exc
    return score_note_arrays(score, path)


def write_midi(
    notes: pd.DataFrame,
    path: str | os.PathLike[str],
    tempo_bpm: float = 100.0,
    program: int = 0,
) -> Path:
    """Write a note table (onset and duration in beats) as a MIDI file, atomically.

    One MIDI track per distinct `track` value when the table has that column (keeping its
    `program` and `is_drum`), else a single track with `program`. The first row's time
    signature (4/4 without one) is written at the start. Times are rounded to 1/480 beat;
    velocity defaults to DEFAULT_VELOCITY when the table has none.
    """
    frame = notes.reset_index(drop=True)
    n = len(frame)
    track_ids = frame["track"].to_numpy() if "track" in frame else np.zeros(n, np.int64)
    programs = frame["program"].to_numpy() if "program" in frame else np.full(n, program)
    drums = frame["is_drum"].to_numpy() if "is_drum" in frame else np.zeros(n, bool)
    velocity = frame["velocity"].to_numpy() if "velocity" in frame else np.full(n, DEFAULT_VELOCITY)
    time = np.rint(frame["onset"].to_numpy(np.float64) * WRITE_TPQ).astype(np.int32)
    duration = np.maximum(
        np.rint(frame["duration"].to_numpy(np.float64) * WRITE_TPQ).astype(np.int32), 1
    )
    pitch = frame["pitch"].to_numpy().astype(np.int8)

    score = Score(WRITE_TPQ)
    score.tempos.append(Tempo(0, qpm=float(tempo_bpm)))
    if len(frame) and "ts_num" in frame:
        signature = (int(frame["ts_num"].iloc[0]), int(frame["ts_den"].iloc[0]))
    else:
        signature = (4, 4)
    score.time_signatures.append(TimeSignature(0, *signature))
    for track_id in np.unique(track_ids):
        rows = np.flatnonzero(track_ids == track_id)
        order = rows[np.lexsort((pitch[rows], time[rows]))]
        track = Track(f"track {int(track_id)}", int(programs[rows[0]]), bool(drums[rows[0]]))
        track.notes = Note.from_numpy(
            time[order], duration[order], pitch[order], velocity[order].astype(np.int8)
        )
        score.tracks.append(track)
    return write_bytes_atomic(path, score.dumps_midi())
