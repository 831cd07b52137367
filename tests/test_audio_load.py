"""Loading audio: every libsndfile format to mono float32 at one rate; bad files rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from audio_files import chirp, write_bad_files, write_good_files

from datasets.audio.files import convert_to_wav, find_audio_files, iter_audio, load_audio
from datasets.io import RejectedInput


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_good_files(tmp_path_factory.mktemp("good"))


def test_every_format_loads_as_mono_float32_at_the_rate(good_files: list[Path]) -> None:
    for path in good_files:
        info = sf.info(str(path))
        x = load_audio(path, 16000)
        assert x.dtype == np.float32, path
        assert x.ndim == 1, path
        assert abs(len(x) - round(info.frames * 16000 / info.samplerate)) <= 1, path
        native, rate = sf.read(str(path), dtype="float32", always_2d=True)
        expected = soxr.resample(native.mean(axis=1), rate, 16000, "HQ")
        lossy = info.subtype == "VORBIS"
        np.testing.assert_allclose(x, expected[: len(x)], atol=1e-5 if not lossy else 1e-3)


def test_streamed_resampling_equals_whole_file(good_files: list[Path]) -> None:
    path = next(p for p in good_files if "441" in p.name)
    blocks = list(iter_audio(path, 16000, block_frames=1000))
    assert len(blocks) > 10
    native, rate = sf.read(str(path), dtype="float32")
    whole = soxr.resample(native.mean(axis=1), rate, 16000, "HQ")
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-5)


def test_channels_are_averaged(tmp_path: Path) -> None:
    left = chirp(0.2, 16000)[:, 0]
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    sf.write(str(tmp_path / "s.wav"), stereo, 16000, "FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav", 16000), left / 2, atol=1e-7)


def test_huge_finite_float_samples_mix_without_overflow(tmp_path: Path) -> None:
    huge = np.full((100, 2), 3e38, dtype=np.float32)
    sf.write(str(tmp_path / "huge.wav"), huge, 16000, "FLOAT")
    with np.errstate(all="raise"):
        mono = load_audio(tmp_path / "huge.wav", 16000)
    np.testing.assert_array_equal(mono, np.float32(3e38))


def test_opposite_infinities_in_two_channels_are_rejected_without_a_warning(tmp_path: Path) -> None:
    stereo = np.zeros((100, 2), dtype=np.float32)
    stereo[7] = [np.inf, -np.inf]
    sf.write(str(tmp_path / "inf.wav"), stereo, 16000, "FLOAT")
    with np.errstate(all="raise"), pytest.raises(RejectedInput, match="at frame 7"):
        load_audio(tmp_path / "inf.wav", 16000)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.wav", "empty file"),
        ("corrupt.wav", "not readable as audio"),
        ("truncated_header.wav", "not readable as audio"),
        ("header_lying_rate.wav", "not readable as audio"),
        ("nan.wav", "non-finite sample .* at frame 1000"),
        ("truncated.flac", "decoding failed"),
    ],
)
def test_bad_files_are_rejected_with_a_reason(tmp_path: Path, name: str, reason: str) -> None:
    write_bad_files(tmp_path)
    with pytest.raises(RejectedInput, match=reason) as info:
        load_audio(tmp_path / name, 16000)
    assert info.value.path.endswith(name)


def test_truncated_data_and_one_sample_files_load(tmp_path: Path) -> None:
    write_bad_files(tmp_path)
    # libsndfile trusts the file length over a data chunk that claims more than is there.
    assert len(load_audio(tmp_path / "header_lying_size.wav", 16000)) == 8000
    assert 3000 < len(load_audio(tmp_path / "truncated_data.wav", 16000)) < 8000
    assert len(load_audio(tmp_path / "one_sample.wav", 16000)) == 1
    assert len(load_audio(tmp_path / "one_sample.wav", 48000)) == 3


def test_limits_reject_before_decoding(good_files: list[Path]) -> None:
    path = good_files[0]
    with pytest.raises(RejectedInput, match="over the limit of 100"):
        load_audio(path, 16000, max_file_bytes=100)
    with pytest.raises(RejectedInput, match=r"over the limit of 0\.5 s"):
        load_audio(path, 16000, max_seconds=0.5)


def test_convert_to_wav_streams_to_a_float_wav(good_files: list[Path], tmp_path: Path) -> None:
    frames = convert_to_wav(good_files[1], tmp_path / "out" / "x.wav", 16000)
    info = sf.info(str(tmp_path / "out" / "x.wav"))
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (
        16000,
        1,
        "FLOAT",
        frames,
    )
    np.testing.assert_array_equal(
        sf.read(str(tmp_path / "out" / "x.wav"), dtype="float32")[0],
        load_audio(good_files[1], 16000),
    )


def test_a_rejected_conversion_leaves_no_file(tmp_path: Path) -> None:
    write_bad_files(tmp_path / "bad")
    with pytest.raises(RejectedInput):
        convert_to_wav(tmp_path / "bad" / "nan.wav", tmp_path / "out" / "nan.wav", 16000)
    assert list((tmp_path / "out").iterdir()) == []


def test_find_audio_files_sorts_and_filters(tmp_path: Path, good_files: list[Path]) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.WAV").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a.flac").write_bytes(b"x")
    assert [p.name for p in find_audio_files(tmp_path)] == ["a.flac", "z.WAV"]
