"""The fault corpus: named kinds of bad MIDI, score and audio files, mixed with good ones.

Tests call `build_corpus(root, track)` to write every kind for one track ("symbolic" or "audio")
into a temporary directory and get back one `Entry` per path written, with what the flow must
make of it:

  ok         a good file: its manifest row is `ok` and it is processed
  rejected   a bad file: its manifest row is `rejected` with a reason a person can act on
  any        a legal but hostile file (absurd tempo, 32 channels, ...): `ok` or `rejected`, the
             run just must not crash, hang or run out of memory on it
  duplicate  same content under several names: exactly one is `ok`, the others `duplicate`
  absent     not a file (a directory named like one): never a manifest row, its contents are

Every kind is a small function registered with `@fault`; its docstring says what it is and why
it is hostile. Everything is generated from fixed seeds, so the corpus is the same bytes on every
run. Big kinds (hours of silence) are sparse files: they cost no disk.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

Track = Literal["symbolic", "audio"]
Expect = Literal["ok", "rejected", "any", "duplicate", "absent"]
TRACKS: tuple[Track, ...] = ("symbolic", "audio")


@dataclass(frozen=True)
class Entry:
    """One path the corpus holds; `path` may carry surrogate escapes (non-UTF-8 names)."""

    kind: str
    path: Path
    expect: Expect


@dataclass(frozen=True)
class FaultKind:
    name: str
    tracks: tuple[Track, ...]
    doc: str
    write: Callable[[Path, Track], list[Entry]]


KINDS: dict[str, FaultKind] = {}

# Kinds built to exhaust memory or time when a reader lacks a limit: tests read them in a
# child process with a timeout, so a missing limit fails one test instead of hanging all.
BOMBS = {
    "symbolic": ("midi_huge_note_count", "score_mxl_zip_bomb", "score_billion_laughs"),
    "audio": ("audio_hours_of_silence",),
}


def fault(*tracks: Track) -> Callable:
    """Register a writer `(directory, track) -> [Entry]` as a kind of the given tracks."""

    def register(write: Callable[[Path, Track], list[Entry]]) -> Callable:
        name = write.__name__
        doc = " ".join((write.__doc__ or "").split())
        if not doc:
            raise ValueError(f"fault kind {name} needs a docstring saying what it is")
        KINDS[name] = FaultKind(name, tracks, doc, write)
        return write

    return register


def kinds_for(track: Track) -> list[FaultKind]:
    return [kind for kind in KINDS.values() if track in kind.tracks]


def build_corpus(root: str | os.PathLike[str], track: Track) -> list[Entry]:
    """Write every kind of `track` into `root` (created); return every path written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []
    for kind in kinds_for(track):
        entries.extend(kind.write(root, track))
    return entries


# --- building blocks: raw MIDI bytes ------------------------------------------------------


def vlq(value: int) -> bytes:
    """A MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_track(events: list[tuple[int, bytes]]) -> bytes:
    """An MTrk chunk from (delta ticks, event bytes), with end-of-track appended."""
    body = b"".join(vlq(delta) + data for delta, data in events) + b"\x00\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body)) + body


def midi_file(tracks: list[bytes], division: int = 480, fmt: int = 1) -> bytes:
    header = b"MThd" + struct.pack(">IHHH", 6, fmt, len(tracks), division & 0xFFFF)
    return header + b"".join(tracks)


def tempo_event(microseconds_per_beat: int) -> bytes:
    return b"\xff\x51\x03" + microseconds_per_beat.to_bytes(3, "big")


def time_signature_event(numerator: int, denominator_power: int) -> bytes:
    return bytes([0xFF, 0x58, 0x04, numerator, denominator_power, 24, 8])


def note_events(
    pitches: list[int], step: int = 480, channel: int = 0, gap: int = 0
) -> list[tuple[int, bytes]]:
    """One note after another, each `step` ticks long, `gap` ticks of rest between them."""
    events: list[tuple[int, bytes]] = []
    for index, pitch in enumerate(pitches):
        events.append((gap if index else 0, bytes([0x90 | channel, pitch, 80])))
        events.append((step, bytes([0x80 | channel, pitch, 0])))
    return events


def good_midi(seed: int) -> bytes:
    """A short two-track piece (melody + bass), different for every seed."""
    rng = np.random.default_rng(seed)
    melody = [int(p) for p in 60 + rng.integers(0, 12, size=16)]
    bass = [int(p) for p in 40 + rng.integers(0, 12, size=4)]
    conductor = midi_track([(0, tempo_event(500_000)), (0, time_signature_event(4, 2))])
    return midi_file(
        [
            conductor,
            midi_track(note_events(melody, step=240)),
            midi_track(note_events(bass, step=960, channel=1)),
        ]
    )


# --- building blocks: scores --------------------------------------------------------------

MUSICXML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 3.1 Partwise//EN"
  "http://www.musicxml.org/dtds/partwise.dtd">
<score-partwise version="3.1">
  <part-list><score-part id="P1"><part-name>Voice</part-name></score-part></part-list>
  <part id="P1">
    <measure number="1">
      <attributes><divisions>1</divisions><key><fifths>0</fifths></key>
        <time><beats>4</beats><beat-type>4</beat-type></time>
        <clef><sign>G</sign><line>2</line></clef></attributes>
{notes}
    </measure>
  </part>
</score-partwise>
"""

NOTE_XML = (
    "      <note><pitch><step>{step}</step><octave>{octave}</octave></pitch>"
    "<duration>1</duration><type>quarter</type></note>"
)


def good_musicxml(steps: str = "CDEF", octave: int = 4) -> str:
    notes = "\n".join(NOTE_XML.format(step=s, octave=octave) for s in steps)
    return MUSICXML.format(notes=notes)


def mxl_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


CONTAINER_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<container><rootfiles>'
    b'<rootfile full-path="score.musicxml"/></rootfiles></container>\n'
)


# --- building blocks: audio ---------------------------------------------------------------


def tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.4 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(2 * np.pi * 3.1 * freq * t)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def audio_bytes(data: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _ogg_crc(page: bytes) -> int:
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def fixed_ogg_serial(data: bytes, serial: int = 1) -> bytes:
    """libsndfile picks a random Ogg stream serial; fix it (and each page's CRC) so the same
    corpus is the same bytes."""
    out, at = bytearray(), 0
    while at < len(data):
        segments = data[at + 26]
        size = 27 + segments + sum(data[at + 27 : at + 27 + segments])
        page = bytearray(data[at : at + size])
        page[14:18] = struct.pack("<I", serial)
        page[22:26] = bytes(4)
        page[22:26] = struct.pack("<I", _ogg_crc(page))
        out += page
        at += size
    return bytes(out)


def good_wav(seed: int) -> bytes:
    """Two seconds of a tone whose pitch depends on the seed, 16-bit PCM at 16 kHz."""
    return audio_bytes(tone(2.0, 16000, freq=220.0 * (1 + seed / 7)), 16000, "WAV", "PCM_16")


def wav_header(
    format_tag: int, channels: int, rate: int, bits: int, data_bytes: int, extra: bytes = b""
) -> bytes:
    """A canonical RIFF/WAVE header whose fields say whatever the caller wants."""
    block = (channels * bits // 8) & 0xFFFF
    byte_rate = (rate * block) & 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, byte_rate, block, bits) + extra
    riff_size = 4 + 8 + len(fmt) + 8 + data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff_size & 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes & 0xFFFFFFFF)
    )


def float_wav(data: np.ndarray, rate: int) -> bytes:
    """A 32-bit float WAV written by hand: libsndfile adds a PEAK chunk with a timestamp to
    the float WAVs it writes, so they differ from run to run."""
    frames = np.ascontiguousarray(data, dtype="<f4")
    channels = 1 if frames.ndim == 1 else frames.shape[1]
    return wav_header(3, channels, rate, 32, frames.nbytes) + frames.tobytes()


# --- writing helpers ----------------------------------------------------------------------

EXTENSION = {"symbolic": ".mid", "audio": ".wav"}


def good_bytes(track: Track, seed: int) -> bytes:
    return good_midi(seed) if track == "symbolic" else good_wav(seed)


def put(directory: Path, name: str, data: bytes, kind: str, expect: Expect) -> list[Entry]:
    path = directory / name
    path.write_bytes(data)
    return [Entry(kind, path, expect)]


# --- good files ---------------------------------------------------------------------------


@fault("symbolic")
def good_midi_files(directory: Path, track: Track) -> list[Entry]:
    """Six well-formed two-track MIDI pieces: must all be `ok` and reach notes and tokens."""
    entries: list[Entry] = []
    for seed in range(6):
        entries += put(directory, f"good_{seed}.mid", good_midi(seed), "good_midi_files", "ok")
    return entries


@fault("symbolic")
def good_score_files(directory: Path, track: Track) -> list[Entry]:
    """One small valid score in each supported text format: MusicXML, compressed .mxl, kern
    and ABC. Must be `ok`: a score corpus is as much a corpus as a MIDI one."""
    kern = "**kern\n*M4/4\n4c\n4d\n4e\n4f\n=\n4g\n4a\n4b\n4cc\n*-\n"
    abc = "X:1\nT:fault corpus\nM:4/4\nL:1/4\nK:C\nCDEF|GABc|\n"
    mxl = mxl_bytes(
        {
            "META-INF/container.xml": CONTAINER_XML,
            "score.musicxml": good_musicxml("GABC", 4).encode(),
        }
    )
    kind = "good_score_files"
    return (
        put(directory, "good_score.musicxml", good_musicxml().encode(), kind, "ok")
        + put(directory, "good_score.mxl", mxl, kind, "ok")
        + put(directory, "good_score.krn", kern.encode(), kind, "ok")
        + put(directory, "good_score.abc", abc.encode(), kind, "ok")
    )


@fault("audio")
def good_audio_files(directory: Path, track: Track) -> list[Entry]:
    """Well-formed audio in the formats and sample types users have: 16-bit WAV, float stereo
    WAV at 44.1 kHz, 24-bit FLAC, Ogg Vorbis, AIFF. Must all be `ok`."""
    kind = "good_audio_files"
    entries: list[Entry] = []
    for seed in range(3):
        entries += put(directory, f"good_{seed}.wav", good_wav(seed), kind, "ok")
    stereo = float_wav(tone(1.5, 44100, 330.0, channels=2), 44100)
    flac = audio_bytes(tone(1.5, 22050, 550.0), 22050, "FLAC", "PCM_24")
    ogg = fixed_ogg_serial(audio_bytes(tone(1.5, 16000, 660.0), 16000, "OGG", "VORBIS"))
    aiff = audio_bytes(tone(1.5, 16000, 770.0), 16000, "AIFF", "PCM_16")
    entries += put(directory, "good_stereo_float.wav", stereo, kind, "ok")
    entries += put(directory, "good_24bit.flac", flac, kind, "ok")
    entries += put(directory, "good_vorbis.ogg", ogg, kind, "ok")
    entries += put(directory, "good_pcm.aiff", aiff, kind, "ok")
    return entries


# --- bad MIDI -----------------------------------------------------------------------------


@fault("symbolic")
def midi_truncated(directory: Path, track: Track) -> list[Entry]:
    """A good MIDI file cut off in the middle of its first note track."""
    data = good_midi(101)
    return put(directory, "truncated.mid", data[: len(data) // 2], "midi_truncated", "rejected")


@fault("symbolic")
def midi_wrong_magic(directory: Path, track: Track) -> list[Entry]:
    """A MIDI file whose header chunk id is `RIFF` instead of `MThd`."""
    data = b"RIFF" + good_midi(102)[4:]
    return put(directory, "wrong_magic.mid", data, "midi_wrong_magic", "rejected")


@fault("symbolic")
def midi_zero_length(directory: Path, track: Track) -> list[Entry]:
    """An empty file named .mid."""
    return put(directory, "empty.mid", b"", "midi_zero_length", "rejected")


@fault("symbolic")
def midi_header_only(directory: Path, track: Track) -> list[Entry]:
    """A valid MThd header that promises two tracks, and nothing after it."""
    data = midi_file([], fmt=1)[:8] + struct.pack(">HHH", 1, 2, 480)
    return put(directory, "header_only.mid", data, "midi_header_only", "rejected")


@fault("symbolic")
def midi_tempo_zero(directory: Path, track: Track) -> list[Entry]:
    """A tempo event of 0 microseconds per beat: an infinite tempo, a division by zero for any
    reader that turns ticks into seconds. Rejected (the file does not say how fast it goes),
    with a reason naming the event, and without a divide-by-zero warning on the way."""
    conductor = midi_track([(0, tempo_event(0))])
    data = midi_file([conductor, midi_track(note_events([60, 62, 64, 65]))])
    return put(directory, "tempo_zero.mid", data, "midi_tempo_zero", "rejected")


@fault("symbolic")
def midi_tempo_absurd(directory: Path, track: Track) -> list[Entry]:
    """The slowest tempo the format allows (0xFFFFFF us per beat, about 3.6 bpm), changed to
    the fastest (1 us per beat, 60 million bpm) halfway through."""
    conductor = midi_track([(0, tempo_event(0xFFFFFF)), (960, tempo_event(1))])
    data = midi_file([conductor, midi_track(note_events([60, 64, 67, 72]))])
    return put(directory, "tempo_absurd.mid", data, "midi_tempo_absurd", "any")


@fault("symbolic")
def midi_time_signature_absurd(directory: Path, track: Track) -> list[Entry]:
    """Time signatures 0/1 then 255/2**255: a zero-length bar and a denominator no integer
    type holds."""
    conductor = midi_track([(0, time_signature_event(0, 0)), (960, time_signature_event(255, 255))])
    data = midi_file([conductor, midi_track(note_events([60, 62, 64, 65, 67]))])
    return put(directory, "timesig_absurd.mid", data, "midi_time_signature_absurd", "any")


@fault("symbolic")
def midi_hours_of_silence(directory: Path, track: Track) -> list[Entry]:
    """Two notes three hours apart at 120 bpm (21,600 beats of rest): a tiny file that
    describes a huge piece (a piano roll of it would not fit in memory)."""
    gap = 3 * 3600 * 2 * 480
    data = midi_file([midi_track(note_events([60, 67], gap=gap))])
    return put(directory, "hours_of_silence.mid", data, "midi_hours_of_silence", "any")


@fault("symbolic")
def midi_only_drums(directory: Path, track: Track) -> list[Entry]:
    """Notes on channel 10 only: percussion, nothing pitched to tokenize."""
    data = midi_file([midi_track(note_events([36, 38, 42, 46] * 4, step=120, channel=9))])
    return put(directory, "only_drums.mid", data, "midi_only_drums", "rejected")


@fault("symbolic")
def midi_zero_notes(directory: Path, track: Track) -> list[Entry]:
    """A well-formed MIDI file with a tempo and a time signature and no notes."""
    conductor = midi_track([(0, tempo_event(500_000)), (0, time_signature_event(4, 2))])
    return put(directory, "zero_notes.mid", midi_file([conductor]), "midi_zero_notes", "rejected")


@fault("symbolic")
def midi_huge_note_count(directory: Path, track: Track) -> list[Entry]:
    """250,000 sixteenth notes in running status (2 MB): over any sane max_notes; a reader
    must refuse it by the limit rather than build every downstream table for it."""
    count = 250_000
    body = bytearray(b"\x00\x90")
    for index in range(count):
        pitch = 48 + index % 24
        body += bytes([pitch, 80, 60, pitch, 0, 0]) if index < count - 1 else bytes([pitch, 80])
    body += b"\x3c\x80" + bytes([48 + (count - 1) % 24, 0]) + b"\x00\xff\x2f\x00"
    track_chunk = b"MTrk" + struct.pack(">I", len(body)) + bytes(body)
    data = midi_file([track_chunk], division=240, fmt=0)
    return put(directory, "huge_note_count.mid", data, "midi_huge_note_count", "rejected")


@fault("symbolic")
def midi_bad_track_length(directory: Path, track: Track) -> list[Entry]:
    """A track chunk whose length field claims 2 GB while the file holds a few bytes."""
    chunk = midi_track(note_events([60, 62, 64]))
    chunk = chunk[:4] + struct.pack(">I", 0x7FFF_FFFF) + chunk[8:]
    return put(
        directory, "bad_track_length.mid", midi_file([chunk]), "midi_bad_track_length", "any"
    )


@fault("symbolic")
def midi_running_status_garbage(directory: Path, track: Track) -> list[Entry]:
    """A track that starts with data bytes and no status byte for running status to repeat,
    followed by undefined status bytes (0xF4, 0xFD)."""
    body = b"\x00\x3c\x40\x10\x3e\x40\x00\xf4\x00\xfd\x05\x90\x3c" + b"\x00\xff\x2f\x00"
    chunk = b"MTrk" + struct.pack(">I", len(body)) + body
    data = midi_file([chunk])
    return put(directory, "running_status_garbage.mid", data, "midi_running_status_garbage", "any")


@fault("symbolic")
def midi_division_zero(directory: Path, track: Track) -> list[Entry]:
    """Zero ticks per quarter note in the header: every tick-to-beat conversion divides by it."""
    data = midi_file([midi_track(note_events([60, 62, 64, 65]))], division=0)
    return put(directory, "division_zero.mid", data, "midi_division_zero", "any")


@fault("symbolic")
def midi_text_file(directory: Path, track: Track) -> list[Entry]:
    """A plain-text file (a README) named .mid."""
    text = "This is not a MIDI file.\nIt is a note someone saved with the wrong name.\n" * 20
    return put(directory, "readme.mid", text.encode(), "midi_text_file", "rejected")


@fault("symbolic")
def midi_random_bytes(directory: Path, track: Track) -> list[Entry]:
    """4 KB of random bytes after a valid MThd header."""
    rng = np.random.default_rng(7)
    data = midi_file([], fmt=1)[:8] + struct.pack(">HHH", 1, 3, 480)
    data += rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    return put(directory, "random_after_header.mid", data, "midi_random_bytes", "any")


# --- bad scores ---------------------------------------------------------------------------


@fault("symbolic")
def score_broken_musicxml(directory: Path, track: Track) -> list[Entry]:
    """A MusicXML file cut off in the middle of a note element: not well-formed XML."""
    text = good_musicxml("CDEFGAB")
    data = text[: text.index("<note>") + 30].encode()
    return put(directory, "broken.musicxml", data, "score_broken_musicxml", "rejected")


@fault("symbolic")
def score_billion_laughs(directory: Path, track: Track) -> list[Entry]:
    """A MusicXML file whose DTD nests entity expansions ten deep (the "billion laughs"
    attack): expanding it naively takes gigabytes."""
    entities = ['<!ENTITY lol0 "lol">']
    for level in range(1, 10):
        entities.append(f'<!ENTITY lol{level} "' + f"&lol{level - 1};" * 10 + '">')
    text = (
        '<?xml version="1.0"?>\n<!DOCTYPE score-partwise [\n'
        + "\n".join(entities)
        + "\n]>\n<score-partwise><work><work-title>&lol9;</work-title></work></score-partwise>\n"
    )
    return put(
        directory, "billion_laughs.musicxml", text.encode(), "score_billion_laughs", "rejected"
    )


@fault("symbolic")
def score_empty_mxl(directory: Path, track: Track) -> list[Entry]:
    """A valid zip archive with no members, named .mxl."""
    return put(directory, "empty.mxl", mxl_bytes({}), "score_empty_mxl", "rejected")


@fault("symbolic")
def score_non_zip_mxl(directory: Path, track: Track) -> list[Entry]:
    """Uncompressed MusicXML text named .mxl (an .mxl must be a zip archive)."""
    data = good_musicxml("EDCB").encode()
    return put(directory, "not_a_zip.mxl", data, "score_non_zip_mxl", "any")


@fault("symbolic")
def score_mxl_zip_bomb(directory: Path, track: Track) -> list[Entry]:
    """An .mxl whose score member inflates from about 250 KB to 256 MB of spaces inside an
    XML comment: a reader must bound what it decompresses."""
    payload = b"<?xml version='1.0'?><!--" + b" " * (256 << 20) + b"-->"
    data = mxl_bytes({"META-INF/container.xml": CONTAINER_XML, "score.musicxml": payload})
    return put(directory, "zip_bomb.mxl", data, "score_mxl_zip_bomb", "rejected")


@fault("symbolic")
def score_kern_garbage(directory: Path, track: Track) -> list[Entry]:
    """A .krn file with a spine header and then tokens that are not kern (no note at all)."""
    text = "**kern\t**kern\n*M4/4\t*M4/4\n@@@ ###\t%%%\n4q;;\t??\n=X=\t=X=\n*v\t*^\n*-\n"
    return put(directory, "garbage.krn", text.encode(), "score_kern_garbage", "rejected")


@fault("symbolic")
def score_abc_garbage(directory: Path, track: Track) -> list[Entry]:
    """An .abc file with no tune header and no notes, just punctuation and binary."""
    data = b"%%%%\n|||: ::| [[[ ]]] \x00\x01\x02 ^^^^ ____ ''' ,,,\n" * 10
    return put(directory, "garbage.abc", data, "score_abc_garbage", "rejected")


@fault("symbolic")
def score_text_named_musicxml(directory: Path, track: Track) -> list[Entry]:
    """A MIDI file saved with a .musicxml name."""
    data = good_midi(103)
    return put(directory, "midi_inside.musicxml", data, "score_text_named_musicxml", "rejected")


# --- bad audio ----------------------------------------------------------------------------


@fault("audio")
def audio_nan_samples(directory: Path, track: Track) -> list[Entry]:
    """A float WAV with a run of NaN samples in the middle of a tone."""
    data = tone(1.0, 16000)
    data[4000:4100] = np.nan
    wav = float_wav(data, 16000)
    return put(directory, "nan_samples.wav", wav, "audio_nan_samples", "rejected")


@fault("audio")
def audio_inf_samples(directory: Path, track: Track) -> list[Entry]:
    """A float WAV with +inf and -inf samples."""
    data = tone(1.0, 16000)
    data[100], data[9000] = np.inf, -np.inf
    wav = float_wav(data, 16000)
    return put(directory, "inf_samples.wav", wav, "audio_inf_samples", "rejected")


@fault("audio")
def audio_one_sample(directory: Path, track: Track) -> list[Entry]:
    """A valid WAV holding a single sample: shorter than any patch or filter."""
    wav = audio_bytes(np.array([[0.25]], dtype=np.float32), 16000, "WAV", "PCM_16")
    return put(directory, "one_sample.wav", wav, "audio_one_sample", "any")


@fault("audio")
def audio_zero_frames(directory: Path, track: Track) -> list[Entry]:
    """A valid WAV header with an empty data chunk."""
    return put(
        directory,
        "zero_frames.wav",
        wav_header(1, 1, 16000, 16, 0),
        "audio_zero_frames",
        "rejected",
    )


@fault("audio")
def audio_32_channels(directory: Path, track: Track) -> list[Entry]:
    """Half a second of 32-channel float audio (a multitrack stem dump)."""
    wav = float_wav(tone(0.5, 16000, channels=32), 16000)
    return put(directory, "channels_32.wav", wav, "audio_32_channels", "any")


@fault("audio")
def audio_192khz(directory: Path, track: Track) -> list[Entry]:
    """One second at 192 kHz, 24-bit: legal, must be resampled, not rejected for its rate."""
    wav = audio_bytes(tone(1.0, 192000, 1000.0), 192000, "WAV", "PCM_24")
    return put(directory, "rate_192k.wav", wav, "audio_192khz", "any")


@fault("audio")
def audio_unknown_codec(directory: Path, track: Track) -> list[Entry]:
    """A RIFF/WAVE file whose fmt chunk names format tag 0x1234, a codec nobody decodes."""
    data = wav_header(0x1234, 1, 16000, 16, 3200) + bytes(3200)
    return put(directory, "unknown_codec.wav", data, "audio_unknown_codec", "rejected")


@fault("audio")
def audio_mp3_named_wav(directory: Path, track: Track) -> list[Entry]:
    """A real MP3 stream saved with a .wav name: a loader that trusts content over names may
    decode it; one that trusts names must reject it cleanly."""
    mp3 = audio_bytes(tone(1.0, 16000, 500.0), 16000, "MP3", "MPEG_LAYER_III")
    return put(directory, "mp3_inside.wav", mp3, "audio_mp3_named_wav", "any")


@fault("audio")
def audio_header_lies_long(directory: Path, track: Track) -> list[Entry]:
    """A 16-bit WAV whose data chunk claims 100x the samples the file holds."""
    samples = (tone(0.5, 16000)[:, 0] * 20000).astype("<i2").tobytes()
    data = wav_header(1, 1, 16000, 16, len(samples) * 100) + samples
    return put(directory, "header_lies_long.wav", data, "audio_header_lies_long", "any")


@fault("audio")
def audio_header_lies_rate(directory: Path, track: Track) -> list[Entry]:
    """A WAV header declaring a sample rate of 0 Hz."""
    samples = (tone(0.5, 16000)[:, 0] * 20000).astype("<i2").tobytes()
    data = wav_header(1, 1, 0, 16, len(samples)) + samples
    return put(directory, "rate_zero.wav", data, "audio_header_lies_rate", "rejected")


@fault("audio")
def audio_truncated_header(directory: Path, track: Track) -> list[Entry]:
    """The first 30 bytes of a good WAV: the fmt chunk ends mid-field."""
    return put(
        directory, "truncated_header.wav", good_wav(11)[:30], "audio_truncated_header", "rejected"
    )


@fault("audio")
def audio_truncated_data(directory: Path, track: Track) -> list[Entry]:
    """A good WAV cut off in the middle of its samples (an interrupted download)."""
    data = good_wav(12)
    return put(
        directory, "truncated_data.wav", data[: len(data) // 2 + 1], "audio_truncated_data", "any"
    )


@fault("audio")
def audio_corrupt_flac(directory: Path, track: Track) -> list[Entry]:
    """A FLAC file whose frames after the first 200 bytes are overwritten with random bytes."""
    data = bytearray(audio_bytes(tone(1.0, 16000, 300.0), 16000, "FLAC", "PCM_16"))
    rng = np.random.default_rng(13)
    data[200:] = rng.integers(0, 256, len(data) - 200, dtype=np.uint8).tobytes()
    return put(directory, "corrupt.flac", bytes(data), "audio_corrupt_flac", "any")


@fault("audio")
def audio_zero_length(directory: Path, track: Track) -> list[Entry]:
    """An empty file named .wav."""
    return put(directory, "empty.wav", b"", "audio_zero_length", "rejected")


@fault("audio")
def audio_wrong_magic(directory: Path, track: Track) -> list[Entry]:
    """A MIDI file saved with a .wav name."""
    return put(directory, "midi_inside.wav", good_midi(104), "audio_wrong_magic", "rejected")


@fault("audio")
def audio_text_file(directory: Path, track: Track) -> list[Entry]:
    """A text file named .flac."""
    text = b"placeholder: the real recording is on the other disk\n" * 10
    return put(directory, "placeholder.flac", text, "audio_text_file", "rejected")


SILENCE_HOURS = 3
SILENCE_RATE = 1000


@fault("audio")
def audio_hours_of_silence(directory: Path, track: Track) -> list[Entry]:
    """Three hours of 16-bit digital silence at 1 kHz: 21.6 MB on paper, a sparse file on disk.
    Resampled to 16 kHz it would be 690 MB of float32: max_seconds must refuse it first."""
    frames = SILENCE_HOURS * 3600 * SILENCE_RATE
    path = directory / "hours_of_silence.wav"
    with open(path, "wb") as handle:
        handle.write(wav_header(1, 1, SILENCE_RATE, 16, frames * 2))
        handle.truncate(handle.tell() + frames * 2)
    return [Entry("audio_hours_of_silence", path, "rejected")]


# --- file-system faults (both tracks) -----------------------------------------------------


@fault("symbolic", "audio")
def fs_symlink_loop(directory: Path, track: Track) -> list[Entry]:
    """Two symbolic links pointing at each other (ELOOP on open)."""
    ext = EXTENSION[track]
    first, second = directory / f"loop_a{ext}", directory / f"loop_b{ext}"
    first.symlink_to(second.name)
    second.symlink_to(first.name)
    return [
        Entry("fs_symlink_loop", first, "rejected"),
        Entry("fs_symlink_loop", second, "rejected"),
    ]


@fault("symbolic", "audio")
def fs_dangling_symlink(directory: Path, track: Track) -> list[Entry]:
    """A symbolic link to a file that does not exist."""
    path = directory / f"dangling{EXTENSION[track]}"
    path.symlink_to("no_such_file_anywhere.bin")
    return [Entry("fs_dangling_symlink", path, "rejected")]


@fault("symbolic", "audio")
def fs_symlink_to_good(directory: Path, track: Track) -> list[Entry]:
    """A symbolic link inside the corpus to a good file elsewhere in it: same content as its
    target, so one of the two is `ok` and the other `duplicate`."""
    target = directory / "linked" / f"target{EXTENSION[track]}"
    target.parent.mkdir()
    target.write_bytes(good_bytes(track, 31))
    link = directory / f"link_to_good{EXTENSION[track]}"
    link.symlink_to(os.path.relpath(target, directory))
    return [
        Entry("fs_symlink_to_good", target, "duplicate"),
        Entry("fs_symlink_to_good", link, "duplicate"),
    ]


@fault("symbolic", "audio")
def fs_fifo(directory: Path, track: Track) -> list[Entry]:
    """A named pipe with a media file name: opening it for reading blocks forever, so a
    reader must check for a regular file before it opens anything."""
    path = directory / f"pipe{EXTENSION[track]}"
    os.mkfifo(path)
    return [Entry("fs_fifo", path, "rejected")]


@fault("symbolic", "audio")
def fs_directory_named_like_file(directory: Path, track: Track) -> list[Entry]:
    """A directory named like a media file, holding a good file: the directory is no manifest
    row, the file inside it is processed."""
    folder = directory / f"folder{EXTENSION[track]}"
    folder.mkdir()
    inner = folder / f"inner{EXTENSION[track]}"
    inner.write_bytes(good_bytes(track, 32))
    kind = "fs_directory_named_like_file"
    return [Entry(kind, folder, "absent"), Entry(kind, inner, "ok")]


@fault("symbolic", "audio")
def fs_non_utf8_name(directory: Path, track: Track) -> list[Entry]:
    """A good file whose name is not valid UTF-8 (Latin-1 bytes from an old archive): the name
    must not crash the manifest writer (Parquet strings are UTF-8)."""
    name = os.fsdecode(b"latin1_\xe9t\xe9" + EXTENSION[track].encode())
    return put(directory, name, good_bytes(track, 33), "fs_non_utf8_name", "any")


@fault("symbolic", "audio")
def fs_duplicate_content(directory: Path, track: Track) -> list[Entry]:
    """The same good file under two names in two folders: processed once, the second row is
    `duplicate` (found by content hash)."""
    data = good_bytes(track, 34)
    (directory / "copies").mkdir()
    kind = "fs_duplicate_content"
    return put(directory, f"original{EXTENSION[track]}", data, kind, "duplicate") + put(
        directory / "copies", f"copy_of_original{EXTENSION[track]}", data, kind, "duplicate"
    )


@fault("symbolic", "audio")
def fs_unreadable(directory: Path, track: Track) -> list[Entry]:
    """A good file with mode 000. Root reads it anyway, so as root it is a good file."""
    path = directory / f"unreadable{EXTENSION[track]}"
    path.write_bytes(good_bytes(track, 35))
    path.chmod(0)
    return [Entry("fs_unreadable", path, "ok" if os.geteuid() == 0 else "rejected")]


@fault("symbolic", "audio")
def fs_temp_leftover(directory: Path, track: Track) -> list[Entry]:
    """A leftover temp file of an interrupted atomic write (`.<name>.<random>.tmp`) holding half
    a file: it must never be taken for an input."""
    data = good_bytes(track, 36)
    name = f".half{EXTENSION[track]}.k2j4x9.tmp"
    return put(directory, name, data[: len(data) // 2], "fs_temp_leftover", "absent")
