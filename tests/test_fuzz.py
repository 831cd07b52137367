"""Fuzzing the readers users feed files to, and the token decoder and bytebeat parser that take
model output and user text: every input ends in a result or a clean rejection.

"Clean" is the documented error type: `RejectedInput` for the MIDI/score reader and the audio
loader, `BytebeatError` for the bytebeat parser, `ValueError` for the token decoder. Inputs are
random bytes and, more effective, mutations of good files (flipped bytes, cuts, spliced
headers). The default run is derandomized (the same examples every time, so CI is stable);
the slow run draws ten times more, fresh each time.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from faults import audio_bytes, good_midi, good_musicxml, good_wav, tone, wav_header
from flowrun import require_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datasets.io import RejectedInput
from datasets.symbolic.notes import NOTE_COLUMNS

SUPPRESS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


def fuzz(examples: int, **strategies):
    """Two tests of one property: `examples` derandomized by default, ten times more when
    slow (hypothesis settings attach to the wrapper `given` makes, so each gets its own)."""

    def decorate(check):
        fast = settings(
            max_examples=examples, deadline=None, derandomize=True, suppress_health_check=SUPPRESS
        )(given(**strategies)(check))
        slow = settings(max_examples=examples * 10, deadline=None, suppress_health_check=SUPPRESS)(
            given(**strategies)(check)
        )
        return fast, pytest.mark.slow(slow)

    return decorate


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """`original` with a few bytes overwritten, a slice cut out or the tail cut off."""
    data = bytearray(original)
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(data)))
        end = draw(st.integers(start, min(len(data), start + 64)))
        del data[start:end]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def write_temp(data: bytes, suffix: str) -> Path:
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as handle:
        handle.write(data)
    return Path(handle.name)


# --- MIDI and scores ----------------------------------------------------------------------

MIDI = good_midi(0)


def check_midi(data: bytes) -> None:
    require_module("datasets/symbolic/midi.py")
    from datasets.symbolic.midi import read_midi

    path = write_temp(data, ".mid")
    try:
        notes = read_midi(path)
    except RejectedInput as exc:
        assert exc.reason
        return
    finally:
        path.unlink()
    assert list(notes.columns) == NOTE_COLUMNS
    assert notes["pitch"].between(0, 127).all()
    assert (notes["duration"] >= 0).all()


midi_inputs = st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=256).map(lambda tail: MIDI[:14] + tail),
    mutated(MIDI),
)


def _midi_reader(data: bytes) -> None:
    check_midi(data)


test_midi_reader, test_midi_reader_slow = fuzz(300, data=midi_inputs)(_midi_reader)


def check_piece(data: bytes, suffix: str) -> None:
    """Through the corpus reader (the flow's path): MIDI or score, then the note checks."""
    require_module("datasets/symbolic/corpus.py")
    from datasets.symbolic.corpus import read_piece

    path = write_temp(data, suffix)
    try:
        notes = read_piece(path, max_notes=10_000)
        assert len(notes) > 0
        assert list(notes.columns) == NOTE_COLUMNS
        assert np.isfinite(notes["onset"].to_numpy()).all()
    except RejectedInput as exc:
        assert exc.reason
    finally:
        path.unlink()


XML = good_musicxml("CDEFGAB").encode()
ABC = b"X:1\nT:t\nM:3/4\nL:1/8\nK:G\nGAB c2d|e2f g3|\n"
KERN = b"**kern\n*M3/4\n4c\n8d\n8e\n=\n2.f\n*-\n"
score_inputs = st.one_of(
    st.tuples(mutated(XML), st.just(".musicxml")),
    st.tuples(mutated(ABC), st.just(".abc")),
    st.tuples(mutated(KERN), st.just(".krn")),
    st.tuples(st.binary(max_size=200), st.sampled_from([".xml", ".mxl", ".abc", ".krn"])),
)


def _score_reader(case: tuple[bytes, str]) -> None:
    check_piece(*case)


test_score_reader, test_score_reader_slow = fuzz(60, case=score_inputs)(_score_reader)


def _midi_piece_reader(data: bytes) -> None:
    check_piece(data, ".mid")


test_midi_piece_reader, test_midi_piece_reader_slow = fuzz(100, data=midi_inputs)(
    _midi_piece_reader
)


# --- the token decoder --------------------------------------------------------------------


def _token_decoder(tokens: list[int], max_duration: int, max_shift: int) -> None:
    require_module("datasets/symbolic/tokenizer.py")
    from datasets.symbolic.tokenizer import Vocab, decode

    vocab = Vocab(4, max_duration, max_shift)
    try:
        onset, duration, pitch = decode(np.asarray(tokens, dtype=np.int32), vocab)
    except ValueError:
        return
    assert len(onset) == len(duration) == len(pitch)
    assert ((pitch >= 0) & (pitch <= 127)).all()
    assert ((duration >= 1) & (duration <= max_duration)).all()
    assert (onset >= 0).all()
    assert (np.diff(onset) >= 0).all()


test_token_decoder, test_token_decoder_slow = fuzz(
    300,
    tokens=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=64)
    | st.lists(st.integers(-3, 400), max_size=200),
    max_duration=st.integers(1, 96),
    max_shift=st.integers(1, 96),
)(_token_decoder)


# --- the audio loader ---------------------------------------------------------------------

WAV = good_wav(0)
FLAC = audio_bytes(tone(0.5, 16000), 16000, "FLAC", "PCM_16")
OGG = audio_bytes(tone(0.5, 16000), 16000, "OGG", "VORBIS")

header_fields = st.tuples(
    st.sampled_from([0, 1, 2, 3, 6, 7, 0x11, 0xFFFE, 0xFFFF]),  # format tag
    st.integers(0, 65_535),  # channels
    st.one_of(st.integers(0, 400_000), st.integers(0, 2**32 - 1)),  # sample rate
    st.sampled_from([0, 1, 7, 8, 16, 24, 32, 64, 65_535]),  # bits per sample
    st.integers(0, 2**32 - 1),  # data size
)


@st.composite
def lying_wav(draw) -> bytes:
    """A WAV header whose every field is drawn, before real 16-bit samples."""
    tag, channels, rate, bits, size = draw(header_fields)
    return wav_header(tag, channels, rate, bits, size) + WAV[44 : 44 + 4000]


audio_inputs = st.one_of(
    st.tuples(st.binary(max_size=512), st.sampled_from([".wav", ".flac", ".ogg"])),
    st.tuples(mutated(WAV), st.just(".wav")),
    st.tuples(mutated(FLAC), st.just(".flac")),
    st.tuples(mutated(OGG), st.just(".ogg")),
    st.tuples(lying_wav(), st.just(".wav")),
)


def _audio_loader(case: tuple[bytes, str]) -> None:
    require_module("datasets/audio/files.py")
    from datasets.audio.files import load_audio

    path = write_temp(*case)
    try:
        samples = load_audio(path, 16000, max_file_bytes=1 << 20, max_seconds=60.0)
        assert samples.dtype == np.float32
        assert samples.ndim == 1
        assert np.isfinite(samples).all()
    except RejectedInput as exc:
        assert exc.reason
    finally:
        path.unlink()


test_audio_loader, test_audio_loader_slow = fuzz(200, case=audio_inputs)(_audio_loader)


def test_lying_wav_strategy_makes_files_soundfile_reads_sometimes():
    """The header strategy is not all noise: a truthful header gives a readable file."""
    data = wav_header(1, 1, 16000, 16, 4000) + WAV[44 : 44 + 4000]
    samples, rate = sf.read(io.BytesIO(data))
    assert rate == 16000
    assert len(samples) == 2000


# --- the bytebeat parser ------------------------------------------------------------------

bytebeat_alphabet = st.sampled_from(
    [*list("t0123456789()+-*/%&|^~<>?: x"), "<<", ">>", "<=", ">=", "==", "!=", "0x", "t", "t"]
)
formulas = st.one_of(
    st.lists(bytebeat_alphabet, max_size=60).map("".join),
    st.text(max_size=80),
    st.builds(
        lambda n, op: f"t{op}{n}", st.integers(0, 10**30), st.sampled_from(["*", ">>", "/", "%"])
    ),
)


def _bytebeat_parser(formula: str) -> None:
    require_module("datasets/audio/bytebeat.py")
    from datasets.audio.bytebeat import BytebeatError, bytebeat

    try:
        samples = bytebeat(formula, seconds=0.01)
    except BytebeatError as exc:
        assert str(exc)
        return
    assert samples.dtype == np.uint8
    assert len(samples) == 80


test_bytebeat_parser, test_bytebeat_parser_slow = fuzz(400, formula=formulas)(_bytebeat_parser)
