"""MIDI -> WAV with the real FluidSynth and FluidR3_GM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from symusic import Note, Score, Tempo, Track

from datasets.audio.render import GAP_SECONDS, render_many, render_midi_to_wav

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").exists(), reason="FluidR3_GM not installed"
)


def write_midi(path: Path, pitches: list[int], program: int, qpm: float = 120.0) -> Path:
    """One track of quarter notes."""
    score = Score(480)
    score.tempos.append(Tempo(0, qpm=qpm))
    track = Track("voice", program=program)
    for index, pitch in enumerate(pitches):
        track.notes.append(Note(index * 480, 480, pitch, 90))
    score.tracks.append(track)
    score.dump_midi(str(path))
    return path


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def test_render_one_file(tmp_path: Path) -> None:
    midi = write_midi(tmp_path / "a.mid", [69, 69], program=0)  # A4 = 440 Hz, 1 s at 120 qpm
    wav = render_midi_to_wav(midi, tmp_path / "out" / "a.wav", sample_rate=16000)
    info = sf.info(str(wav))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "FLOAT")
    assert info.duration == pytest.approx(1.0 + GAP_SECONDS, abs=0.01)
    x = sf.read(str(wav), dtype="float32")[0]
    assert np.max(np.abs(x)) == pytest.approx(0.9, rel=1e-6)  # scaled to the default peak
    assert np.sqrt(np.mean(x[:8000] ** 2)) > 0.05
    assert dominant_hz(x[:16000], 16000) == pytest.approx(440, abs=3)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.wav"]
    raw = render_midi_to_wav(midi, tmp_path / "raw.wav", peak=None)
    y = sf.read(str(raw), dtype="float32")[0]
    np.testing.assert_allclose(y * (0.9 / np.max(np.abs(y))), x, atol=1e-6)


def test_program_override_changes_the_instrument(tmp_path: Path) -> None:
    midi = write_midi(tmp_path / "a.mid", [60, 64, 67], program=0)
    piano = sf.read(str(render_midi_to_wav(midi, tmp_path / "p.wav")), dtype="float32")[0]
    organ = sf.read(str(render_midi_to_wav(midi, tmp_path / "o.wav", program=19)), dtype="float32")[
        0
    ]
    same = sf.read(str(render_midi_to_wav(midi, tmp_path / "p0.wav", program=0)), dtype="float32")[
        0
    ]
    np.testing.assert_array_equal(piano, same)
    assert len(piano) == len(organ)
    assert np.sqrt(np.mean((piano - organ) ** 2)) > 0.01


def test_bulk_render_cuts_each_piece_at_its_place(tmp_path: Path) -> None:
    midis = [
        write_midi(tmp_path / "a.mid", [60] * 4, program=0, qpm=120),  # 2 s
        write_midi(tmp_path / "b.mid", [72] * 2, program=40, qpm=60),  # 2 s
        write_midi(tmp_path / "c.mid", [67] * 3, program=0, qpm=180),  # 1 s
    ]
    wavs = render_many(midis, [tmp_path / f"{m.stem}.wav" for m in midis], program=None)
    durations = [sf.info(str(w)).duration for w in wavs]
    assert durations == pytest.approx([2 + GAP_SECONDS, 2 + GAP_SECONDS, 1 + GAP_SECONDS], abs=0.01)
    for wav, hz in zip(wavs, (261.6, 523.3, 392.0), strict=True):
        x = sf.read(str(wav), dtype="float32")[0]
        assert x[:8000].std() > 0.002  # each piece starts at its own start
        assert dominant_hz(x[:16000], 16000) == pytest.approx(hz, rel=0.02), wav
    single = sf.read(str(render_midi_to_wav(midis[0], tmp_path / "single.wav")), dtype="float32")
    np.testing.assert_allclose(sf.read(str(wavs[0]), dtype="float32")[0], single[0], atol=1e-4)


def test_missing_fluidsynth_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    midi = write_midi(tmp_path / "a.mid", [60], program=0)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="fluidsynth is not installed"):
        render_midi_to_wav(midi, tmp_path / "a.wav")


def test_missing_soundfont_and_bad_program_are_refused(tmp_path: Path) -> None:
    midi = write_midi(tmp_path / "a.mid", [60], program=0)
    with pytest.raises(FileNotFoundError, match="soundfont"):
        render_midi_to_wav(midi, tmp_path / "a.wav", soundfont=str(tmp_path / "none.sf2"))
    with pytest.raises(ValueError, match="program"):
        render_midi_to_wav(midi, tmp_path / "a.wav", program=128)
