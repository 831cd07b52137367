"""Tiny real corpora for the pipeline, runner and end-to-end tests.

MIDI files are written with the project's own MIDI writer (symusic underneath) and rendered to
WAV by the real FluidSynth, so the data stages read real files; one broken file per corpus
shows a rejected row with its reason in every run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.audio.render import render_many
from datasets.symbolic.midi import write_midi
from datasets.symbolic.notes import note_table

# Four-voice chords (bass, tenor, alto, soprano), one per half note; pieces differ by key.
CHORDS = [(48, 55, 64, 72), (53, 57, 65, 72), (55, 59, 62, 74), (48, 55, 64, 72)]


def chorale_notes(index: int, bars: int = 4):
    """A short four-voice piece in 4/4, transposed by `index` semitones (so each is distinct)."""
    rows: dict[str, list] = {name: [] for name in ("onset", "duration", "pitch", "track")}
    for step, chord in enumerate(CHORDS * bars):
        for voice, pitch in enumerate(chord):
            rows["onset"].append(2.0 * step)
            rows["duration"].append(2.0)
            rows["pitch"].append(pitch + index % 12)
            rows["track"].append(voice)
    n = len(rows["onset"])
    return note_table(
        rows
        | {
            "velocity": np.full(n, 80),
            "program": np.zeros(n),
            "is_drum": np.zeros(n, bool),
            "tempo": np.full(n, 100.0),
            "ts_num": np.full(n, 4),
            "ts_den": np.full(n, 4),
        }
    )


def write_midi_corpus(root: Path, n_pieces: int, start: int = 0) -> list[Path]:
    """`piece_<i>.mid` for i in [start, start + n_pieces): real MIDI files."""
    return [
        write_midi(chorale_notes(i), root / f"piece_{i:03d}.mid")
        for i in range(start, start + n_pieces)
    ]


def write_broken_midi(root: Path) -> Path:
    """A `.mid` file that is not MIDI: the data stage must reject it with a reason."""
    path = root / "broken.mid"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a MIDI file\n")
    return path


def write_wav_corpus(root: Path, midi_paths: list[Path], sample_rate: int = 16000) -> list[Path]:
    """FluidSynth renders of `midi_paths` as `<stem>.wav` under `root` (one FluidSynth run)."""
    wavs = [root / f"{path.stem}.wav" for path in midi_paths]
    return render_many(midi_paths, wavs, sample_rate=sample_rate)


def write_broken_wav(root: Path) -> Path:
    """A `.wav` file that is not audio: the data stage must reject it with a reason."""
    path = root / "broken.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF, but not really\n")
    return path


def write_corpora(root: Path, n_pieces: int = 3) -> tuple[Path, Path]:
    """`root/midi` and `root/wav` (renders of the same pieces), each with one broken file."""
    midis = write_midi_corpus(root / "midi", n_pieces)
    write_broken_midi(root / "midi")
    write_wav_corpus(root / "wav", midis)
    write_broken_wav(root / "wav")
    return root / "midi", root / "wav"
