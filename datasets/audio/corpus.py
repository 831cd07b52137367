"""Where the audio comes from: a directory of files, the Bach chorales rendered, or bytebeat.

Every corpus ends as a directory of audio files (renders are cached under `corpora/`), so the
rest of the stage treats them alike. Inputs that could not even become a file (a formula the
parser refuses) come back as manifest rows with the reason.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundfile as sf

from datasets.audio.bytebeat import BUILTIN_FORMULAS, read_formulas, render_formulas
from datasets.audio.files import find_audio_files
from datasets.audio.recordings import RECORDING_CORPORA, recordings_corpus
from datasets.audio.render import render_many
from datasets.inventory import corpus_inventory, mark_duplicates
from datasets.io import manifest_row

BACH = "bach"
BYTEBEAT = "bytebeat"
# Built-in corpora of real recordings (`datasets.audio.recordings`): `recordings-speech`, ...
RECORDINGS_PREFIX = "recordings-"
# Joins the corpora of a mix: `recordings-speech+recordings-music+bach`.
MIX_SEPARATOR = "+"


@dataclass
class AudioCorpus:
    root: Path  # manifest paths are relative to this
    paths: list[Path]
    refused: list[dict[str, Any]] = field(default_factory=list)  # manifest rows, rejected


def corpus_parts(corpus: str) -> list[str]:
    """The corpora a mix joins with `+` (a directory whose name has a `+` is one corpus)."""
    if MIX_SEPARATOR not in corpus or Path(corpus).is_dir():
        return [corpus]
    parts = corpus.split(MIX_SEPARATOR)
    labels = [Path(part).name for part in parts]
    if "" in parts or len(set(labels)) != len(labels):
        raise ValueError(f"corpus mix {corpus!r} needs distinct, non-empty parts")
    return parts


def file_group(path: str, mixed: bool) -> str:
    """The group a file shares its split with: the top directory of its manifest path (a
    speaker, a song), or of its path within its part of a mix (`<part>/<speaker>`)."""
    return "/".join(path.split("/")[: 2 if mixed else 1])


def audio_inventory(
    corpus: str,
    data_dir: str | os.PathLike[str],
    sample_rate: int,
    limit: int | None,
    program: int,
    max_file_bytes: int,
) -> list[dict[str, Any]]:
    """The inventory of `corpus` (`corpus_inventory`, plus the inputs refused before they were
    files). In a mix each part keeps its own `limit` and its paths go under the part's name
    (`recordings-speech/<speaker>/<file>`), and a file an earlier part already had is a
    duplicate."""
    parts = corpus_parts(corpus)
    entries: list[dict[str, Any]] = []
    for part in parts:
        found = audio_corpus(part, data_dir, sample_rate, limit, program)
        rows = corpus_inventory(part, found.paths, found.root, max_file_bytes, limit)
        rows += [dict(row, file="") for row in found.refused]
        if len(parts) > 1:
            rows = [dict(row, path=f"{Path(part).name}/{row['path']}") for row in rows]
        entries += rows
    return mark_duplicates(entries) if len(parts) > 1 else entries


def bach_wavs(
    data_dir: str | os.PathLike[str], sample_rate: int, program: int, limit: int | None
) -> list[Path]:
    """The bundled chorales rendered with FluidSynth to `corpora/bach_wav/<program>/`, once.

    Renders already there at `sample_rate` are kept; the missing ones are rendered together,
    in one FluidSynth process.
    """
    from datasets.symbolic.corpus import export_bach_midi

    data_dir = Path(data_dir)
    midis = export_bach_midi(data_dir / "corpora" / "bach", limit)
    out_dir = data_dir / "corpora" / "bach_wav" / str(program)
    wavs = [out_dir / f"{midi.stem}.wav" for midi in midis]
    missing = [
        (midi, wav)
        for midi, wav in zip(midis, wavs, strict=True)
        if not (wav.exists() and sf.info(str(wav)).samplerate == sample_rate)
    ]
    if missing:
        render_many([m for m, _ in missing], [w for _, w in missing], sample_rate, program)
    return wavs


def bytebeat_wavs(
    data_dir: str | os.PathLike[str], source: str, seconds: float, limit: int | None
) -> AudioCorpus:
    """`source` is "bytebeat" (the built-in set) or a text file of one formula per line."""
    if source == BYTEBEAT:
        formulas = [(f"builtin:{i + 1}", f) for i, f in enumerate(BUILTIN_FORMULAS)]
        name = "builtin"
    else:
        formulas = read_formulas(source)
        name = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:12]
    root = Path(data_dir) / "corpora" / "bytebeat" / name
    paths, refused = render_formulas(formulas[:limit], root, seconds)
    rows = [
        manifest_row(label, hashlib.sha256(label.encode()).hexdigest(), 0, "rejected", reason)
        for label, reason in refused
    ]
    return AudioCorpus(root, paths, rows)


def audio_corpus(
    corpus: str,
    data_dir: str | os.PathLike[str],
    sample_rate: int,
    limit: int | None = None,
    program: int = 0,
    bytebeat_seconds: float = 30.0,
) -> AudioCorpus:
    """Resolve `corpus`: "bach", "bytebeat", "recordings-speech" or "recordings-music" (real
    recordings from Debian and npm packages), a .txt of formulas, or a directory of audio."""
    if corpus == BACH:
        root = Path(data_dir) / "corpora" / "bach_wav" / str(program)
        return AudioCorpus(root, bach_wavs(data_dir, sample_rate, program, limit))
    domain = corpus.removeprefix(RECORDINGS_PREFIX)
    if corpus.startswith(RECORDINGS_PREFIX) and domain in RECORDING_CORPORA:
        root, files, checked = recordings_corpus(domain, data_dir)
        refused = [
            manifest_row(
                f"{r.source}:{r.path.name}",
                hashlib.sha256(f"{r.source}:{r.path}".encode()).hexdigest(),
                r.path.stat().st_size,
                r.status,
                r.reason,
            )
            for r in checked
            if r.status != "ok"
        ]
        # An even spread over the sorted files, so a small limit still spans many groups.
        step = max(1, len(files) // limit) if limit else 1
        return AudioCorpus(root, files[::step][:limit], refused)
    if corpus == BYTEBEAT or corpus.endswith(".txt"):
        if corpus != BYTEBEAT and not Path(corpus).is_file():
            raise FileNotFoundError(f"formula file {corpus} does not exist")
        return bytebeat_wavs(data_dir, corpus, bytebeat_seconds, limit)
    root = Path(corpus)
    if not root.is_dir():
        raise FileNotFoundError(
            f"corpus {corpus!r} is neither 'bach', 'bytebeat', a .txt of formulas nor a directory"
        )
    return AudioCorpus(root, find_audio_files(root))
