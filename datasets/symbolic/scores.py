"""Score formats (MusicXML, kern, abc, ...) -> note tables, with music21.

music21 is slow (tens of ms to seconds per file) but reads what symusic cannot; the corpus stage
caches its results per file, so each score is parsed once.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from music21 import bar, chord, converter, meter, note, percussion, repeat, spanner, stream, tempo
from music21.exceptions21 import Music21Exception

from datasets.io import RejectedInput
from datasets.symbolic.notes import DEFAULT_TEMPO, DEFAULT_VELOCITY, note_table

SCORE_SUFFIXES = (".mxl", ".musicxml", ".xml", ".krn", ".abc")


def _has_repeats(score: stream.Score) -> bool:
    """Whether the score has anything `expandRepeats` would play out (repeat barlines, D.C.
    or segno marks, volta brackets)."""
    marks = score.recurse().getElementsByClass((bar.Repeat, repeat.RepeatExpression))
    return marks.first() is not None or bool(score.spannerBundle.getByClass(spanner.RepeatBracket))


def _expand_repeats(score: stream.Score) -> stream.Score:
    """Play repeats out, as a listener hears them; scores without measures or whose repeats
    don't nest stay as they are. Expanding copies the whole score (most of a folk tune's parse
    time), so a score without repeats is not expanded."""
    if not _has_repeats(score):
        return score
    try:
        return score.expandRepeats()
    except (Music21Exception, ValueError, IndexError):
        return score


def _changes(flat: stream.Stream, kind: type, value) -> tuple[np.ndarray, list]:
    marks = sorted((float(m.offset), value(m)) for m in flat.getElementsByClass(kind))
    return np.array([offset for offset, _ in marks], dtype=np.float64), [v for _, v in marks]


def _in_force(times: np.ndarray, values: list, onsets: np.ndarray, default) -> list:
    if not len(times):
        return [default] * len(onsets)
    at = np.maximum(np.searchsorted(times, onsets, side="right") - 1, 0)
    return [values[i] for i in at]


def notes_from_stream(score: stream.Stream, path: str | os.PathLike[str]) -> pd.DataFrame:
    """A music21 score as a note table: one track per part, ties merged, repeats expanded."""
    if isinstance(score, stream.Opus):
        raise RejectedInput(path, "holds several scores (an opus); split it into one per file")
    if isinstance(score, stream.Score):
        score = _expand_repeats(score)
    parts = list(score.parts) if isinstance(score, stream.Score) else [score]
    rows: dict[str, list] = {key: [] for key in ("onset", "duration", "pitch", "velocity")}
    rows.update(track=[], program=[], is_drum=[], tempo=[], ts_num=[], ts_den=[])
    for index, part in enumerate(parts):
        # In place: the score is this function's own (parsed for it, or expanded), and a
        # copy of every note was a third of the parse time.
        part.stripTies(inPlace=True)
        flat = part.flatten()
        instrument = part.getInstrument(returnDefault=True)
        program = instrument.midiProgram if instrument.midiProgram is not None else 0
        tempo_times, tempo_values = _changes(
            flat, tempo.MetronomeMark, lambda m: m.getQuarterBPM() or DEFAULT_TEMPO
        )
        ts_times, ts_values = _changes(
            flat, meter.TimeSignature, lambda m: (m.numerator, m.denominator)
        )
        onsets, part_rows = [], []
        for element in flat.notes:
            members = element.notes if isinstance(element, chord.ChordBase) else [element]
            # Unpitched percussion is kept, flagged as drums, at its display pitch.
            pitches = [
                m.displayPitch().midi if isinstance(m, note.Unpitched) else m.pitch.midi
                for m in members
            ]
            velocity = element.volume.velocity or DEFAULT_VELOCITY
            drum = isinstance(element, note.Unpitched | percussion.PercussionChord)
            for midi in pitches:
                onsets.append(float(element.offset))
                part_rows.append((float(element.quarterLength), midi, velocity, drum))
        part_onsets = np.array(onsets, dtype=np.float64)
        tempos = _in_force(tempo_times, tempo_values, part_onsets, DEFAULT_TEMPO)
        signatures = _in_force(ts_times, ts_values, part_onsets, (4, 4))
        for onset, (duration, midi, velocity, drum), qpm, (num, den) in zip(
            onsets, part_rows, tempos, signatures, strict=True
        ):
            rows["onset"].append(onset)
            rows["duration"].append(duration)
            rows["pitch"].append(midi)
            rows["velocity"].append(velocity)
            rows["track"].append(index)
            rows["program"].append(program)
            rows["is_drum"].append(drum)
            rows["tempo"].append(qpm)
            rows["ts_num"].append(num)
            rows["ts_den"].append(den)
    if not rows["onset"]:
        raise RejectedInput(path, "contains no notes (a score with only rests or metadata)")
    return note_table(rows)


MAX_UNCOMPRESSED_BYTES = 50_000_000  # an .mxl inflating past this is a zip bomb, not a score


def check_mxl(path: Path, max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES) -> None:
    """Refuse a compressed MusicXML file that is no zip or inflates past the limit, before
    music21 inflates it into memory."""
    try:
        with zipfile.ZipFile(path) as archive:
            inflated = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise RejectedInput(path, f"not a valid .mxl (zip) file: {exc}") from exc
    if inflated > max_uncompressed_bytes:
        raise RejectedInput(
            path,
            f"inflates to {inflated} bytes, over the limit of {max_uncompressed_bytes} "
            "(a zip bomb, or a score far larger than any real one)",
        )


def parse_score(
    path: str | os.PathLike[str], max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES
) -> stream.Stream:
    """Parse a score file with music21; raises RejectedInput when music21 cannot read it."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise RejectedInput(path, "empty file (0 bytes)")
    if path.suffix.lower() == ".mxl":
        check_mxl(path, max_uncompressed_bytes)
    try:
        return converter.parse(path)
    except Exception as exc:  # music21 raises many unrelated types for unreadable input
        raise RejectedInput(
            path, f"music21 cannot read it as {path.suffix}: {type(exc).__name__}: {exc}"
        ) from exc


def read_score(
    path: str | os.PathLike[str], max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES
) -> pd.DataFrame:
    """One score file as a note table; an opus (several scores in one file) is refused."""
    return notes_from_stream(parse_score(path, max_uncompressed_bytes), path)


def read_scores(
    path: str | os.PathLike[str], max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES
) -> list[tuple[str, pd.DataFrame]]:
    """Every score of a file as (piece, note table): one ("", table) for a single score; for
    an opus (an abc file of many folk tunes, say), one piece per score, named by its number in
    the file (or its position when it has none), each a work of its own."""
    parsed = parse_score(path, max_uncompressed_bytes)
    if not isinstance(parsed, stream.Opus):
        return [("", notes_from_stream(parsed, path))]
    pieces: dict[str, pd.DataFrame] = {}
    for index, score in enumerate(parsed.scores, start=1):
        number = score.metadata.number if score.metadata is not None else None
        name = str(number or index)
        name = name if name not in pieces else f"{name}-{index}"  # two tunes of one number
        pieces[name] = notes_from_stream(score, f"{path} piece {name}")
    return list(pieces.items())
