"""MIDI -> WAV with FluidSynth (mono float32), one process for many files.

Starting FluidSynth and loading a General MIDI soundfont costs more than rendering a chorale,
so `render_many` lays the pieces end to end in one MIDI file (with a silent gap for the release
tails), renders that once and cuts the result at the known times. Reverb and chorus are off: a
dry, deterministic render that does not depend on which piece came before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from symusic import Score, Tempo

from datasets.audio.files import write_wav

DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
GAP_SECONDS = 2.0  # silence after each piece: room for the release tail, cut with the piece
MAX_PROGRAMS = 15  # MIDI has 16 channels and one belongs to drums


def fluidsynth_binary() -> str:
    binary = shutil.which("fluidsynth")
    if binary is None:
        raise RuntimeError(
            "fluidsynth is not installed or not on PATH; install it "
            "(Debian/Ubuntu: apt-get install fluidsynth fluid-soundfont-gm)"
        )
    return binary


def _soundfont(soundfont: str | None) -> str:
    path = soundfont or DEFAULT_SOUNDFONT
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"soundfont {path} not found (Debian/Ubuntu: apt-get install fluid-soundfont-gm)"
        )
    return path


def _load_seconds(midi_path: str | os.PathLike[str], program: int | None):
    """The score in seconds, with every melodic track's program replaced when asked."""
    score = Score(str(midi_path)).to("second")
    if program is not None:
        if not 0 <= program <= 127:
            raise ValueError(f"program must be a General MIDI program 0..127, got {program}")
        for track in score.tracks:
            if not track.is_drum:
                track.program = program
    return score


def _chunks(scores: list, max_programs: int = MAX_PROGRAMS) -> list[list[int]]:
    """Indices of `scores` grouped so no group needs more melodic programs than channels."""
    groups: list[list[int]] = []
    programs: set[int] = set()
    for index, score in enumerate(scores):
        mine = {t.program for t in score.tracks if not t.is_drum}
        if not groups or len(programs | mine) > max_programs:
            groups.append([])
            programs = set()
        groups[-1].append(index)
        programs |= mine
    return groups


def _merge(scores: list, gap: float) -> tuple[Score, list[tuple[float, float]]]:
    """Pieces end to end in one score (one track per program), and each piece's time span."""
    merged = Score(480).to("second")
    merged.tempos.append(Tempo(0.0, qpm=120.0, ttype="second"))
    tracks: dict[tuple[int, bool], object] = {}
    spans = []
    start = 0.0
    for score in scores:
        end = start + max(score.end(), 0.0) + gap
        for track in score.tracks:
            shifted = track.shift_time(start)
            key = (track.program, track.is_drum)
            if key not in tracks:
                merged.tracks.append(shifted)
                tracks[key] = merged.tracks[-1]
            else:
                target = tracks[key]
                target.notes.extend(shifted.notes)
                target.controls.extend(shifted.controls)
                target.pitch_bends.extend(shifted.pitch_bends)
        spans.append((start, end))
        start = end
    for track in merged.tracks:
        track.sort()
    return merged, spans


def _fluidsynth(midi: Path, wav: Path, sample_rate: int, soundfont: str, gain: float) -> None:
    command = [
        fluidsynth_binary(),
        "-n",
        "-i",
        "-q",
        "-R",
        "0",
        "-C",
        "0",
        "-g",
        str(gain),
        "-r",
        str(sample_rate),
        "-T",
        "wav",
        "-O",
        "float",
        "-F",
        str(wav),
        soundfont,
        str(midi),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wav.exists():
        raise RuntimeError(
            f"fluidsynth failed on {midi} (exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )


def render_many(
    midi_paths: Sequence[str | os.PathLike[str]],
    wav_paths: Sequence[str | os.PathLike[str]],
    sample_rate: int = 16000,
    program: int | None = None,
    soundfont: str | None = None,
    gain: float = 0.5,
    peak: float | None = 0.9,
) -> list[Path]:
    """Render each MIDI file to its WAV (mono float32, atomic) with one FluidSynth run per
    group of files (a group uses at most 15 melodic programs, the channels MIDI has).

    Each piece is scaled to `peak` (FluidSynth's piano lands near -16 dBFS, which would waste
    three bits of any quantizer the pipeline applies later); `None` keeps FluidSynth's level.
    """
    if len(midi_paths) != len(wav_paths):
        raise ValueError(f"{len(midi_paths)} MIDI files but {len(wav_paths)} WAV paths")
    font = _soundfont(soundfont)
    scores = [_load_seconds(path, program) for path in midi_paths]
    with tempfile.TemporaryDirectory(prefix="render-") as tmp:
        for group_index, group in enumerate(_chunks(scores)):
            merged, spans = _merge([scores[i] for i in group], GAP_SECONDS)
            midi = Path(tmp) / f"group-{group_index}.mid"
            wav = Path(tmp) / f"group-{group_index}.wav"
            merged.dump_midi(str(midi))
            _fluidsynth(midi, wav, sample_rate, font, gain)
            audio, _ = sf.read(str(wav), dtype="float32", always_2d=True)
            mono = audio.mean(axis=1, dtype=np.float32)
            for index, (start, end) in zip(group, spans, strict=True):
                lo, hi = round(start * sample_rate), round(end * sample_rate)
                piece = np.zeros(hi - lo, dtype=np.float32)
                available = mono[lo:hi]
                piece[: len(available)] = available
                loudest = float(np.max(np.abs(piece), initial=0.0))
                if peak is not None and loudest > 0:
                    piece *= np.float32(peak / loudest)
                write_wav(wav_paths[index], piece, sample_rate)
    return [Path(path) for path in wav_paths]


def render_midi_to_wav(
    midi_path: str | os.PathLike[str],
    wav_path: str | os.PathLike[str],
    sample_rate: int = 16000,
    program: int | None = None,
    soundfont: str | None = None,
    peak: float | None = 0.9,
) -> Path:
    """Render one MIDI file to a mono float32 WAV (atomically); `program` overrides every
    melodic track's General MIDI program; default soundfont FluidR3_GM; scaled to `peak`."""
    return render_many([midi_path], [wav_path], sample_rate, program, soundfont, peak=peak)[0]
