"""Real audio files for the audio tests: good ones in every format, and the bad-file list."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import soundfile as sf


def chirp(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A gliding tone plus a little noise: broadband, never silent, different per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 200 + 50 * seed
    x = 0.5 * np.sin(2 * np.pi * (f0 * t + 400 * t**2)) + 0.01 * rng.standard_normal(len(t))
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32) * np.linspace(
        1.0, 0.6, channels, dtype=np.float32
    )


def write_good_files(root: Path, seconds: float = 1.0) -> list[Path]:
    """The same kind of signal as WAV/FLAC/OGG/AIFF, at several rates, widths and layouts."""
    root.mkdir(parents=True, exist_ok=True)
    specs = [
        ("a_pcm16.wav", 16000, 1, "PCM_16"),
        ("b_float_441.wav", 44100, 2, "FLOAT"),
        ("c_pcm24.flac", 48000, 1, "PCM_24"),
        ("d_vorbis.ogg", 22050, 2, "VORBIS"),
        ("e_pcm16.aiff", 8000, 1, "PCM_16"),
        ("f_8ch.wav", 16000, 8, "PCM_16"),
        ("g_192k.wav", 192000, 1, "PCM_24"),
    ]
    paths = []
    for index, (name, rate, channels, subtype) in enumerate(specs):
        path = root / name
        sf.write(str(path), chirp(seconds, rate, channels, seed=index), rate, subtype)
        paths.append(path)
    return paths


def write_bad_files(root: Path) -> dict[str, str]:
    """file name -> a word the rejection reason must contain ("" when it must be accepted)."""
    root.mkdir(parents=True, exist_ok=True)
    good = chirp(0.5, 16000)[:, 0]
    sf.write(str(root / "_template.wav"), good, 16000, "PCM_16")
    template = (root / "_template.wav").read_bytes()
    (root / "_template.wav").unlink()
    (root / "empty.wav").write_bytes(b"")
    (root / "corrupt.wav").write_bytes(bytes(range(256)) * 8)
    (root / "truncated_header.wav").write_bytes(template[:30])
    # Cut mid-data: libsndfile reads the frames that are there, so this one is accepted.
    (root / "truncated_data.wav").write_bytes(template[: len(template) // 2])
    lying = bytearray(template)
    fmt = lying.find(b"fmt ")
    lying[fmt + 12 : fmt + 16] = struct.pack("<I", 0)  # sample rate 0
    (root / "header_lying_rate.wav").write_bytes(bytes(lying))
    oversized = bytearray(template)
    data = oversized.find(b"data")
    oversized[data + 4 : data + 8] = struct.pack("<I", 10**8)  # claims 100 MB of samples
    (root / "header_lying_size.wav").write_bytes(bytes(oversized))
    nan = good.copy()
    nan[1000:1010] = np.nan
    sf.write(str(root / "nan.wav"), nan, 16000, "FLOAT")
    sf.write(str(root / "one_sample.wav"), good[:1], 16000, "PCM_16")
    flac = root / "_template.flac"
    sf.write(str(flac), good, 16000, "PCM_16")
    data = flac.read_bytes()
    flac.unlink()
    (root / "truncated.flac").write_bytes(data[: len(data) // 2])
    return {
        "empty.wav": "empty",
        "corrupt.wav": "not readable",
        "truncated_header.wav": "not readable",
        "truncated_data.wav": "",
        "header_lying_rate.wav": "not readable",
        "header_lying_size.wav": "",
        "nan.wav": "non-finite",
        "one_sample.wav": "shorter than one patch",
        "truncated.flac": "decoding failed",
    }


def write_mix_corpus(root: Path) -> str:
    """Two corpora as a mix `<root>/speech+<root>/music`: four speakers and a song, two
    1-second noise takes each, and `music/song/copy.wav`, a copy of `speech/anna/take0.wav`."""
    noise = np.random.default_rng(0)
    for group in ("speech/anna", "speech/boris", "speech/clara", "speech/dora", "music/song"):
        (root / group).mkdir(parents=True)
        for take in range(2):
            path = root / group / f"take{take}.wav"
            sf.write(str(path), 0.3 * noise.standard_normal(16000), 16000, "PCM_16")
    (root / "music/song/copy.wav").write_bytes((root / "speech/anna/take0.wav").read_bytes())
    return f"{root / 'speech'}+{root / 'music'}"
