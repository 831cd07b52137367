"""Real corpora and a quiet Prefect set-up for the orchestration benchmarks.

The corpora are music21's bundled Bach chorales exported to MIDI and rendered to WAV by
FluidSynth, made once under `bench/out/corpus/` and kept: building them is not what the
benchmarks time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def quiet_prefect() -> None:
    """A private PREFECT_HOME (no cross-talk with other runs' results or database), no
    analytics, warnings only, and time for the temporary server to start on a busy machine.
    Call before importing prefect."""
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-prefect-"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def start_prefect() -> None:
    """Start this process's temporary Prefect server now, so no timed run pays for it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.hello()


def chorale_corpus(n_pieces: int, sample_rate: int = 16000) -> tuple[Path, Path]:
    """`(midi_dir, wav_dir)` with the first `n_pieces` chorales, built once and cached."""
    from datasets.audio.render import render_many
    from datasets.symbolic.corpus import export_bach_midi

    root = OUT / "corpus"
    midis = export_bach_midi(root / "all-midi", n_pieces)
    wavs = [root / "all-wav" / f"{midi.stem}.wav" for midi in midis]
    missing = [(m, w) for m, w in zip(midis, wavs, strict=True) if not w.exists()]
    if missing:
        render_many([m for m, _ in missing], [w for _, w in missing], sample_rate=sample_rate)
    return root / "all-midi", root / "all-wav"


def working_copy(source: Path, target: Path, names: list[str]) -> Path:
    """A fresh directory holding `names` from `source` (a corpus the benchmark may grow)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in names:
        shutil.copy2(source / name, target / name)
    return target
