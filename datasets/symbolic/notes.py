"""The note table: the one in-memory form every reader (MIDI, scores, JSB) produces.

A note table is a pandas DataFrame with `NOTE_COLUMNS`. Times are in beats, where a beat is a
quarter note (MIDI ticks / ticks-per-quarter, music21 quarterLength), so every format agrees.
Rows are sorted by (onset, pitch, track) so equal inputs give equal tables.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from datasets.io import RejectedInput

NOTE_DTYPES: dict[str, str] = {
    "onset": "float64",  # beats (quarter notes) from the start of the piece
    "duration": "float64",  # beats
    "pitch": "int16",  # MIDI pitch 0..127
    "velocity": "int16",  # 1..127
    "track": "int16",  # index of the track / part the note came from
    "program": "int16",  # General MIDI program 0..127 of that track
    "is_drum": "bool",  # percussion: kept in notes.parquet, kept out of pitched tokens
    "tempo": "float64",  # quarter notes per minute in force at the onset
    "ts_num": "int16",  # time signature in force at the onset
    "ts_den": "int16",
}
NOTE_COLUMNS: list[str] = list(NOTE_DTYPES)
SORT_COLUMNS = ["onset", "pitch", "track", "duration"]

DEFAULT_TEMPO = 120.0  # the MIDI default when a file sets none
DEFAULT_VELOCITY = 80


def note_arrays(columns: dict[str, np.ndarray | list]) -> dict[str, np.ndarray]:
    """Note columns with the canonical dtypes, sorted by SORT_COLUMNS: the fast path's form."""
    arrays = {
        name: np.asarray(columns[name]).astype(dtype, copy=False)
        for name, dtype in NOTE_DTYPES.items()
    }
    order = np.lexsort([arrays[name] for name in reversed(SORT_COLUMNS)])
    return {name: array[order] for name, array in arrays.items()}


def note_table(columns: dict[str, np.ndarray | list]) -> pd.DataFrame:
    """A note table with the canonical dtypes, column order and row order."""
    return pd.DataFrame(note_arrays(columns), copy=False)


def check_notes(
    notes: pd.DataFrame, path: str | os.PathLike[str], max_notes: int | None = None
) -> pd.DataFrame:
    """Refuse tables no stage can use, naming the file and the reason."""
    if len(notes) == 0:
        raise RejectedInput(path, "contains no notes (an empty score or only metadata)")
    if max_notes is not None and len(notes) > max_notes:
        raise RejectedInput(
            path, f"has {len(notes)} notes, over the limit max_notes={max_notes}; raise it"
        )
    if not np.isfinite(notes["onset"].to_numpy()).all():
        raise RejectedInput(path, "has notes with non-finite onsets")
    if bool(notes["is_drum"].all()):
        raise RejectedInput(path, "has only drum notes, nothing pitched to tokenize")
    return notes
