"""Real recordings from packages the registries serve: read speech and recorded music, offline.

The renders of one sound font have a high band that follows from the low band far more than a
recording's does, so the super-resolution model also learns and is judged on real recordings.
They come from Debian packages (`apt-get download`, no root needed once apt's lists exist) and
npm packages (`npm pack`), fetched once into the data directory's corpora cache and unpacked
there. Each source says which of its files are recordings and which group (speaker, level,
song, note) a file belongs to; splits keep a group whole, so test speakers and songs are unheard.

Every file is checked before it becomes high-resolution truth (`check_recording`): it must
decode, last at least `MIN_SECONDS`, not be clipped and have real content up to 8 kHz (no cliff
below it, which the Greek tuxpaint voices and the 8 kHz animal clips have). Copies with the same
decoded audio are kept once (the tuxpaint stamps reuse one recording under many names).
Refused files become manifest rows with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import soundfile as sf
from scipy.signal import welch

from datasets.io import code_version, write_json_atomic

# Beside each unpacked package: its recordings' checks, reused while this module is unchanged.
CHECKED_FILE = "checked.json"
MIN_SECONDS = 0.5
CLIP_LEVEL = 0.999
MAX_CLIPPED_FRACTION = 1e-3  # more samples than this at full scale: clipped, not clean truth
# Band levels (Hz) compared to find a cliff below 8 kHz: a recording whose 7.7-8 kHz band is
# this far below its 6-7 kHz band was band-limited, whatever its sample rate says.
EDGE_BAND, BELOW_EDGE_BAND = (7700.0, 8000.0), (6000.0, 7000.0)
MAX_EDGE_DROP_DB = 25.0
MIN_NATIVE_RATE = 16000


@dataclass(frozen=True)
class RecordingSource:
    name: str
    manager: Literal["apt", "npm"]
    package: str  # with the version for npm (`name@1.2.3`): the same bytes on every machine
    licence: str
    # A path inside the unpacked package -> its group (speaker, level, song), or None when the
    # file is not a recording this source uses.
    group: Callable[[PurePosixPath], str | None]


def _tuxpaint_group(path: PurePosixPath) -> str | None:
    """Spoken stamp descriptions, `<stamp>_desc_<lang>.ogg`: one main speaker per language."""
    stem = path.name.split(".")[0]
    if "_desc_" not in stem or not path.name.endswith(".ogg"):
        return None
    language = stem.rsplit("_desc_", 1)[1]
    # The Greek voice was recorded band-limited near 7.5-9 kHz: the edge check refuses 72 % of
    # its files and the rest sit just past the limit, so none of it is truth.
    return None if language == "el" else "tuxpaint-" + language


def _fillets_group(path: PurePosixPath) -> str | None:
    """Acted Czech lines, `sound/<level>/cs/*.ogg`; the two fish speak in every level, so the
    group is the level (the split is by text, the speaker-disjoint one is tuxpaint's)."""
    parts = path.parts
    if path.suffix != ".ogg" or "cs" not in parts[-2:-1]:
        return None
    level = parts[-3]
    return "fillets-" + ("cabin" if level.startswith("cabin") else level)


def _fretsonfire_group(path: PurePosixPath) -> str | None:
    """Four songs, each a backing mix (`song.ogg`) and a guitar stem: one group per song."""
    if path.suffix != ".ogg" or path.name not in ("song.ogg", "guitar.ogg"):
        return None
    return "fof-" + path.parent.name


def _supersonic_group(path: PurePosixPath) -> str | None:
    """CC0 instrument and drum samples; a category (`hat`, `loop`, `tabla`) per group."""
    if path.suffix != ".flac" or path.parent.name != "samples":
        return None
    return "scsynth-" + path.stem.split("_")[0]


def _piano_group(path: PurePosixPath) -> str | None:
    """Salamander grand piano notes, `audio/<note><octave>v<velocity>.ogg`: one group per note
    across velocities (the same string struck harder is near-duplicate content)."""
    if path.suffix != ".ogg" or path.parent.name != "audio":
        return None
    return "piano-" + path.stem.split("v")[0]


SOURCES: dict[str, RecordingSource] = {
    source.name: source
    for source in (
        RecordingSource("tuxpaint", "apt", "tuxpaint-stamps-default", "GPL-2", _tuxpaint_group),
        RecordingSource("fillets", "apt", "fillets-ng-data-cs", "GPL-2", _fillets_group),
        RecordingSource(
            "fretsonfire", "apt", "fretsonfire-songs-muldjord", "CC-BY-SA-3.0", _fretsonfire_group
        ),
        RecordingSource(
            "scsynth", "npm", "supersonic-scsynth-samples@0.84.2", "CC0-1.0", _supersonic_group
        ),
        *(
            RecordingSource(
                f"piano-v{v}",
                "npm",
                f"@audio-samples/piano-velocity{v}@1.0.5",
                "CC-BY-3.0",
                _piano_group,
            )
            for v in (4, 8, 12, 16)
        ),
    )
}
# The built-in corpora of recordings, by domain.
RECORDING_CORPORA: dict[str, tuple[str, ...]] = {
    "speech": ("tuxpaint", "fillets"),
    "music": ("fretsonfire", "scsynth", "piano-v4", "piano-v8", "piano-v12", "piano-v16"),
}


class FetchError(RuntimeError):
    """A package could not be fetched; the message names the command that fixes it."""


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


def _download_apt(package: str, into: Path) -> Path:
    if shutil.which("apt-get") is None:
        raise FetchError(f"{package}: apt-get is not here; the recordings need a Debian system")
    done = _run(["apt-get", "download", package], into)
    if done.returncode != 0 and os.geteuid() == 0:
        _run(["apt-get", "update"], into)  # a fresh machine has no package lists yet
        done = _run(["apt-get", "download", package], into)
    if done.returncode != 0:
        fix = "apt-get update" if os.geteuid() == 0 else "sudo apt-get update"
        raise FetchError(
            f"{package}: `apt-get download {package}` failed ({done.stderr.strip()[-300:]}); "
            f"run `{fix}` and try again"
        )
    debs = sorted(into.glob(f"{package}_*.deb"))
    if not debs:
        raise FetchError(f"{package}: apt-get download wrote no .deb into {into}")
    return debs[-1]


def _download_npm(package: str, into: Path) -> Path:
    if shutil.which("npm") is None:
        raise FetchError(f"{package}: npm is not here; install it with `apt-get install npm`")
    done = _run(["npm", "pack", package, "--silent"], into)
    if done.returncode != 0:
        raise FetchError(f"{package}: `npm pack {package}` failed ({done.stderr.strip()[-300:]})")
    return into / done.stdout.strip().splitlines()[-1]


def unpack(archive: Path, into: Path) -> None:
    """A .deb (its data, via dpkg-deb) or an npm .tgz, into `into`."""
    if archive.suffix == ".deb":
        done = _run(["dpkg-deb", "-x", str(archive), str(into)], into.parent)
        if done.returncode != 0:
            raise FetchError(f"{archive}: dpkg-deb -x failed: {done.stderr.strip()[-300:]}")
        return
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")  # no links out of `into`, no devices


def fetch_source(
    source: RecordingSource, cache_dir: str | os.PathLike[str], archive: Path | None = None
) -> Path:
    """The unpacked package of `source` under `cache_dir/<name>/tree`, fetched once (the
    tree is renamed into place when complete, so a killed fetch starts again). `archive`: a
    package file already at hand instead of the registry's."""
    home = Path(cache_dir) / source.name
    tree = home / "tree"
    if tree.is_dir():
        return tree
    home.mkdir(parents=True, exist_ok=True)
    if archive is None:
        download = _download_apt if source.manager == "apt" else _download_npm
        archive = download(source.package, home)
    pending = home / "tree.pending"
    shutil.rmtree(pending, ignore_errors=True)
    pending.mkdir()
    unpack(archive, pending)
    pending.rename(tree)
    return tree


def check_recording(samples: np.ndarray, rate: int) -> str | None:
    """Why `samples` (frames x channels, float) are not clean high-resolution truth for a
    16 kHz target, or None when they are."""
    seconds = len(samples) / rate
    if rate < MIN_NATIVE_RATE:
        return f"sample rate {rate} Hz is below {MIN_NATIVE_RATE} Hz"
    if seconds < MIN_SECONDS:
        return f"{seconds:.3f} s long, under {MIN_SECONDS} s"
    clipped = float(np.mean(np.abs(samples) >= CLIP_LEVEL))
    if clipped > MAX_CLIPPED_FRACTION:
        return f"clipped: {clipped:.2%} of samples at full scale"
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    freqs, power = welch(mono - mono.mean(), rate, nperseg=min(len(mono), 4096))

    def band_db(low: float, high: float) -> float:
        """The band's mean level in dB: a log mean, so a cliff inside it is not averaged away
        by the loud bins before the cliff."""
        return float(np.mean(10 * np.log10(power[(freqs >= low) & (freqs < high)] + 1e-30)))

    if band_db(*BELOW_EDGE_BAND) < -200:
        return "silent above 6 kHz"
    drop = band_db(*BELOW_EDGE_BAND) - band_db(*EDGE_BAND)
    if drop > MAX_EDGE_DROP_DB:
        return f"band-limited below 8 kHz: 7.7-8 kHz is {drop:.0f} dB under 6-7 kHz"
    return None


def audio_hash(samples: np.ndarray) -> str:
    """sha256 of the decoded audio (16-bit), so re-encoded copies of one recording match."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    return hashlib.sha256(pcm.tobytes()).hexdigest()


@dataclass(frozen=True)
class Recording:
    path: Path  # in the unpacked package
    group: str
    source: str
    status: str  # "ok", "rejected" or "duplicate"
    reason: str = ""


def _check_file(path: Path) -> tuple[str, str]:
    """("", why it is refused) or (the hash of its decoded audio, "")."""
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as exc:  # libsndfile's errors, whatever the format
        return "", f"does not decode: {exc}"
    reason = check_recording(samples, rate)
    return ("", reason) if reason is not None else (audio_hash(samples), "")


def check_tree(source: RecordingSource, tree: Path) -> dict[str, tuple[str, str, str]]:
    """Every recording of `source` under `tree`: path inside it -> (group, `_check_file`).

    Decoding thousands of files takes minutes, so the results are kept beside the tree in
    `checked.json` and reused while this module (its checks and sources) is unchanged."""
    cache = tree.parent / CHECKED_FILE
    version = code_version(sys.modules[__name__])
    try:
        saved = json.loads(cache.read_text())
    except (OSError, ValueError):  # not there yet, or damaged: checked again below
        saved = {}
    if saved.get("version") == version:
        return {inside: tuple(result) for inside, *result in saved["files"]}
    checked = {}
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        inside = path.relative_to(tree).as_posix()
        group = source.group(PurePosixPath(inside))
        if group is not None:
            checked[inside] = (group, *_check_file(path))
    rows = [[inside, *result] for inside, result in checked.items()]
    write_json_atomic(cache, {"version": version, "files": rows})
    return checked


def select_recordings(source: RecordingSource, tree: Path, seen: set[str]) -> list[Recording]:
    """Every recording of `source` under `tree`, checked (`check_tree`) and deduplicated
    against the decoded audio in `seen` (updated), in path order."""
    found = []
    for inside, (group, digest, reason) in check_tree(source, tree).items():
        path = tree / inside
        if reason:
            found.append(Recording(path, group, source.name, "rejected", reason))
        elif digest in seen:
            found.append(Recording(path, group, source.name, "duplicate", "same audio as another"))
        else:
            seen.add(digest)
            found.append(Recording(path, group, source.name, "ok"))
    return found


def recordings_corpus(
    domain: str,
    data_dir: str | os.PathLike[str],
    archives: dict[str, Path] | None = None,
) -> tuple[Path, list[Path], list[Recording]]:
    """The recordings of `domain` ("speech" or "music", `RECORDING_CORPORA`) as a directory
    `corpora/recordings/<domain>/<group>/<source>-<file>` (copies of the files that pass, so
    the top directory is the group `--split-by dir` keeps whole); returns (root, files, every
    file's `Recording`). Packages are fetched into `corpora/packages/` once; `archives` maps a
    source name to a package file already at hand."""
    if domain not in RECORDING_CORPORA:
        raise ValueError(f"unknown recordings {domain!r}; choose from {sorted(RECORDING_CORPORA)}")
    corpora = Path(data_dir) / "corpora"
    root = corpora / "recordings" / domain
    seen: set[str] = set()
    checked: list[Recording] = []
    files = []
    for name in RECORDING_CORPORA[domain]:
        source = SOURCES[name]
        tree = fetch_source(source, corpora / "packages", (archives or {}).get(name))
        for recording in select_recordings(source, tree, seen):
            checked.append(recording)
            if recording.status != "ok":
                continue
            # The path inside the package, hashed into the name: stamps in different folders
            # share names without sharing audio.
            inside = recording.path.relative_to(tree).as_posix()
            tag = hashlib.sha256(inside.encode()).hexdigest()[:6]
            stem, suffix = recording.path.name.split(".", 1)
            target = root / recording.group / f"{name}-{stem}-{tag}.{suffix}"
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(recording.path, target.with_name(target.name + ".part"))
                target.with_name(target.name + ".part").rename(target)
            files.append(target)
    return root, sorted(files), checked
