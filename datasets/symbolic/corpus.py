"""Corpora: finding the files, reading any of them into note tables, the bundled chorales.

A corpus is a directory of MIDI and score files, the name `bach` (music21's bundled chorales:
350 distinct files for the 371 Riemenschneider numbers, exported to MIDI once under
`data/corpora/bach/`), or a JSB JSON file in Coconet's format, whose pieces keep their own
train/valid/test split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from datasets.io import RejectedInput
from datasets.symbolic.jsb import REST, load_jsb
from datasets.symbolic.midi import MIDI_SUFFIXES, read_midi, write_midi
from datasets.symbolic.notes import DEFAULT_TEMPO, DEFAULT_VELOCITY, check_notes, note_table
from datasets.symbolic.scores import SCORE_SUFFIXES, notes_from_stream, read_score, read_scores

CORPUS_SUFFIXES = MIDI_SUFFIXES + SCORE_SUFFIXES
JSB_STEPS_PER_BEAT = 4  # Coconet's JSB grid is 16th notes
BACH_TEMPO = 100.0  # music21's chorales carry no tempo mark


def discover_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every corpus file under `root`, recursively, sorted by path (suffixes case-insensitive).

    Hidden files and directories (a leading dot) are skipped: they hold tools' state, not music.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"corpus directory {root} does not exist")
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in CORPUS_SUFFIXES:
                found.append(Path(directory) / name)
    return sorted(found)


def read_pieces(
    path: str | os.PathLike[str], max_notes: int | None = None
) -> list[tuple[str, pd.DataFrame]]:
    """Every piece of a corpus file as (piece, checked note table): ("", table) for a MIDI file
    or a single score, one per score of an opus. Scores without notes are left out; a file
    left with none is rejected."""
    path = Path(path)
    if path.suffix.lower() not in SCORE_SUFFIXES:
        return [("", read_piece(path, max_notes))]
    pieces = read_scores(path)
    if len(pieces) == 1:
        return [(pieces[0][0], check_notes(pieces[0][1], path, max_notes))]
    kept = [(name, notes) for name, notes in pieces if len(notes)]
    if not kept:
        raise RejectedInput(path, f"none of its {len(pieces)} scores has notes")
    total = sum(len(notes) for _, notes in kept)
    if max_notes is not None and total > max_notes:
        raise RejectedInput(path, f"has {total} notes, over the limit max_notes={max_notes}")
    return [(name, check_notes(notes, f"{path} piece {name}")) for name, notes in kept]


def read_piece(path: str | os.PathLike[str], max_notes: int | None = None) -> pd.DataFrame:
    """Any corpus file as a checked note table; raises RejectedInput with a reason."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in MIDI_SUFFIXES:
        notes = read_midi(path)
    elif suffix in SCORE_SUFFIXES:
        notes = read_score(path)
    else:
        raise RejectedInput(path, f"unsupported file type {suffix!r}; expected {CORPUS_SUFFIXES}")
    return check_notes(notes, path, max_notes)


def bach_chorale_names() -> list[str]:
    """music21's chorales in Riemenschneider order, as corpus names like 'bach/bwv269'.

    The 371 Riemenschneider numbers point to 350 distinct files (21 numbers reuse an earlier
    chorale's file); each file is listed once, at its first number.
    """
    from music21.corpus import chorales

    return list(dict.fromkeys(chorales.Iterator(returnType="filename")))


def export_bach_midi(out_dir: str | os.PathLike[str], limit: int | None = None) -> list[Path]:
    """Export music21's bundled chorales to `out_dir/<bwv>.mid`, once.

    Files already there are kept (delete them to re-export); each new file is written
    atomically, so an interrupted export resumes where it stopped. Repeats are played out
    (bwv277 needs it) and ties merged, one MIDI track per voice.
    """
    from music21 import corpus

    out_dir = Path(out_dir)
    names = bach_chorale_names()[:limit]
    paths = []
    for name in names:
        target = out_dir / f"{Path(name).name}.mid"
        if not target.exists():
            notes = notes_from_stream(corpus.parse(name), name)
            write_midi(notes, target, tempo_bpm=BACH_TEMPO)
        paths.append(target)
    return paths


def voice_notes(pitches: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One voice of grid steps (REST for silence) -> (onset, duration, pitch) in steps.

    Consecutive equal pitches are one held note: Coconet's format cannot tell a held note from
    a repeated one, and held notes are by far the commoner in the chorales.
    """
    pitches = np.asarray(pitches, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate([[True], pitches[1:] != pitches[:-1]]))
    ends = np.concatenate([starts[1:], [len(pitches)]])
    sounding = pitches[starts] != REST
    return starts[sounding], (ends - starts)[sounding], pitches[starts][sounding]


def jsb_note_tables(path: str | os.PathLike[str]) -> list[tuple[str, str, pd.DataFrame]]:
    """A Coconet JSB file as (piece id, split, note table) triples, one track per voice."""
    try:
        splits = load_jsb(path)
    except ValueError as exc:
        raise RejectedInput(path, str(exc).removeprefix(f"{path}: ")) from exc
    pieces = []
    for split, chorales in splits.items():
        for index, chorale in enumerate(chorales):
            columns: dict[str, list[np.ndarray]] = {"onset": [], "duration": [], "pitch": []}
            tracks = []
            for voice in range(chorale.shape[1]):
                onset, duration, pitch = voice_notes(chorale[:, voice])
                columns["onset"].append(onset / JSB_STEPS_PER_BEAT)
                columns["duration"].append(duration / JSB_STEPS_PER_BEAT)
                columns["pitch"].append(pitch)
                tracks.append(np.full(len(onset), voice))
            n = sum(len(t) for t in tracks)
            notes = note_table(
                {
                    **{key: np.concatenate(parts) for key, parts in columns.items()},
                    "velocity": np.full(n, DEFAULT_VELOCITY),
                    "track": np.concatenate(tracks),
                    "program": np.zeros(n),
                    "is_drum": np.zeros(n, bool),
                    "tempo": np.full(n, DEFAULT_TEMPO),
                    "ts_num": np.full(n, 4),
                    "ts_den": np.full(n, 4),
                }
            )
            pieces.append((f"{split}/{index:04d}", split, notes))
    return pieces


def music21_corpus_files(limit: int | None = None) -> tuple[Path, list[Path]]:
    """(root, files) of every work music21 ships that we can read (MusicXML, kern, abc: Bach,
    Palestrina, Monteverdi, Renaissance to Classical works, thousands of folk tunes in abc
    files of many tunes each). `limit` takes that many files spread evenly over the sorted
    list, so a small subset still spans composers and formats."""
    from music21 import corpus as music21_corpus

    paths = sorted(
        Path(p) for p in music21_corpus.getCorePaths() if Path(p).suffix.lower() in CORPUS_SUFFIXES
    )
    root = Path(os.path.commonpath(paths))
    if limit is not None and len(paths) > limit:
        paths = [paths[i * len(paths) // limit] for i in range(limit)]
    return root, paths


def corpus_files(
    corpus: str, data_dir: str | os.PathLike[str], limit: int | None = None
) -> tuple[Path, list[Path]]:
    """(root, files) of a corpus: `bach`, `music21`, a directory, or a JSB .json file.

    `limit` keeps the first chorales of `bach` and an even spread of `music21`. A directory
    is listed whole (files beyond a limit are rejected in the manifest, not left out); a JSB
    file is one file, so its limit applies to pieces later.
    """
    if corpus == "bach":
        root = Path(data_dir) / "corpora" / "bach"
        return root, sorted(export_bach_midi(root, limit))
    if corpus == "music21":
        return music21_corpus_files(limit)
    path = Path(corpus)
    if path.is_dir():
        return path, discover_files(path)
    if path.is_file() and path.suffix.lower() == ".json":
        return path.parent, [path]
    raise ValueError(
        f"corpus {corpus!r} is neither 'bach', 'music21', an existing directory, "
        "nor a JSB .json file"
    )
