"""A tiny audio data directory in the contract's format, for the super-resolution tests.

Short four-voice chord phrases are written as MIDI, rendered by the real FluidSynth (through
`datasets.audio.render`) at 16 kHz, and laid out as the audio data stage lays them out:
`audio/hr/<file_id>.wav`, `audio/files.parquet` and `audio/pairs/<split>-NNNNN.parquet`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from symusic import Note, Score, Track

from datasets.audio.dataset import FILES_SCHEMA
from datasets.audio.pairs import PairSpec
from datasets.audio.render import render_many
from datasets.io import write_parquet_atomic
from models.audio.data import pair_shards
from models.audio.mismatch import write_filter_pairs

HR_RATE = 16000
# (bass, tenor, alto, soprano) chords, one per half note at 120 bpm.
CHORDS = [
    (48, 55, 64, 72),
    (53, 57, 65, 72),
    (55, 59, 62, 74),
    (45, 57, 64, 69),
    (50, 57, 65, 74),
    (43, 55, 62, 71),
]
SPLITS = {"train": 3, "valid": 1, "test": 1}


def write_phrase(path: Path, index: int, program: int) -> Path:
    score = Score(480)
    track = Track("choir", program=program)
    for i in range(8):
        chord = CHORDS[(index + 2 * i) % len(CHORDS)]
        for pitch in chord:
            track.notes.append(Note(i * 480, 480, pitch, 80))
        track.notes.append(Note(i * 480 + 240, 240, chord[-1] + 2, 70))
    score.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(str(path))
    return path


def render_corpus(root: Path) -> dict[str, list[Path]]:
    """Render the phrases (piano and organ) once: split -> WAV paths at HR_RATE."""
    midis, wavs, splits = [], [], []
    number = 0
    for split, count in SPLITS.items():
        for _ in range(count):
            name = f"phrase{number:02d}"
            midis.append(write_phrase(root / "midi" / f"{name}.mid", number, (0, 19)[number % 2]))
            wavs.append(root / "wav" / f"{name}.wav")
            splits.append(split)
            number += 1
    render_many(midis, wavs, sample_rate=HR_RATE)
    out: dict[str, list[Path]] = {}
    for split, wav in zip(splits, wavs, strict=True):
        out.setdefault(split, []).append(wav)
    return out


def make_audio_data_dir(data_dir: Path, renders: dict[str, list[Path]], spec: PairSpec) -> Path:
    """data_dir/audio/{hr/*.wav,files.parquet,pairs/*} from the rendered WAVs."""
    rows = []
    for split, wavs in renders.items():
        for wav in wavs:
            file_id = wav.stem
            hr_rel = f"audio/hr/{file_id}.wav"
            target = data_dir / hr_rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(wav.read_bytes())
            rows.append(
                {
                    "file_id": file_id,
                    "path": wav.name,
                    "split": split,
                    "hr_path": hr_rel,
                    "n_samples": sf.info(str(wav)).frames,
                }
            )
    rows.sort(key=lambda r: r["file_id"])
    write_parquet_atomic(
        data_dir / "audio" / "files.parquet", pa.Table.from_pylist(rows, FILES_SCHEMA)
    )
    write_filter_pairs(data_dir, data_dir / "audio" / "pairs", spec, tuple(SPLITS))
    return data_dir


@pytest.fixture(scope="session")
def audio_renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The rendered phrases, made once per test session whichever module asks first."""
    root = tmp_path_factory.getbasetemp() / "audio-renders"
    done = root / "done"
    if not done.exists():
        renders = render_corpus(root)
        done.write_text("\n".join(f"{s}\t{p}" for s, paths in renders.items() for p in paths))
    renders: dict[str, list[Path]] = {}
    for line in done.read_text().splitlines():
        split, path = line.split("\t")
        renders.setdefault(split, []).append(Path(path))
    return renders


@pytest.fixture(scope="module")
def audio_data_dir(
    tmp_path_factory: pytest.TempPathFactory, audio_renders: dict[str, list[Path]]
) -> Path:
    """A data directory with the renders as ratio-4 soxr pairs of 2048 samples."""
    spec = PairSpec(hr_rate=HR_RATE, ratio=4, patch=2048, stride=1024)
    return make_audio_data_dir(tmp_path_factory.mktemp("audio-data"), audio_renders, spec)


@pytest.fixture(scope="module")
def tiny_set(audio_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight training patches from the middle of one rendered phrase."""
    table = pq.read_table(pair_shards(audio_data_dir / "audio" / "pairs", "train")[0])
    out = tmp_path_factory.mktemp("tiny-pairs")
    pq.write_table(table.slice(40, 8), out / "train-00000.parquet")
    return out
