"""Decoding one audio file, cached: the first per-file step of the audio data stage.

`load_entry` decodes an inventory entry, mixes it to mono, resamples it to `hr_rate` and writes
`audio/hr/<file_id>.wav`, recording the outcome in a load stamp under `cache/audio/load/`, keyed
on the file's sha256, the parameters and the code version: a rerun with nothing changed decodes
nothing. A stamp is trusted only when it parses and the WAV it vouches for still has the
recorded rate and length (see `datasets.audio.dataset` on why they may not).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import soundfile as sf

import datasets.audio.files
from datasets.audio.files import convert_to_wav
from datasets.io import RejectedInput, code_version, sha256_json, write_json_atomic


def make_file_id(path: str, sha256: str) -> str:
    """A readable, filesystem-safe id: the manifest path flattened, plus 8 hex of content."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", str(Path(path).with_suffix(""))).strip("_")[-60:]
    return f"{stem or 'audio'}-{sha256[:8]}"


def load_code_version() -> str:
    """The code a decoded WAV depends on: a change to it decodes every file again."""
    return code_version(datasets.audio.files, sys.modules[__name__])


def _read_load_stamp(path: Path) -> dict[str, Any] | None:
    """A load stamp as written, or None when it is missing or damaged (a power cut before the
    stage's sync can leave it empty or short): the file is then loaded again."""
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or not {"status", "reason", "n_samples"} <= cached.keys():
        return None
    return cached


def _wav_matches(path: Path, sample_rate: int, frames: int) -> bool:
    """Whether `path` is still the WAV a cache record describes (another rate may overwrite it)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        return False
    return info.samplerate == sample_rate and info.frames == frames


def load_entry(
    entry: dict[str, Any],
    data_dir: str | os.PathLike[str],
    hr_rate: int,
    min_samples: int = 1,
    max_file_bytes: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Decode one inventory entry to `audio/hr/<file_id>.wav` (or reuse it) and say how it went.

    `entry` comes from `datasets.inventory.inventory` (path, file, size_bytes, sha256, status,
    reason). The result adds file_id, hr_path (relative to `data_dir`), n_samples, load_key and
    reused; files shorter than `min_samples` at `hr_rate` are rejected.
    """
    record = dict(entry, file_id="", hr_path="", n_samples=0, load_key="", reused=False)
    if entry["status"] != "ok":
        return record
    data_dir = Path(data_dir)
    key = sha256_json([entry["sha256"], hr_rate, max_file_bytes, max_seconds, load_code_version()])
    file_id = make_file_id(entry["path"], entry["sha256"])
    hr_rel = f"audio/hr/{file_id}.wav"
    stamp = data_dir / "cache" / "audio" / "load" / f"{key}.json"
    record.update(file_id=file_id, load_key=key)
    cached = _read_load_stamp(stamp)
    if cached is not None and (
        cached["status"] != "ok" or _wav_matches(data_dir / hr_rel, hr_rate, cached["n_samples"])
    ):
        record["reused"] = True
    else:
        try:
            frames = convert_to_wav(
                entry["file"],
                data_dir / hr_rel,
                hr_rate,
                max_file_bytes,
                max_seconds,
                durable=False,
            )
            cached = {"status": "ok", "reason": "", "n_samples": frames}
        except RejectedInput as exc:
            cached = {"status": "rejected", "reason": exc.reason, "n_samples": 0}
        write_json_atomic(stamp, cached, durable=False)
    record.update(status=cached["status"], reason=cached["reason"], n_samples=cached["n_samples"])
    if record["status"] == "ok" and record["n_samples"] < min_samples:
        record["status"] = "rejected"
        record["reason"] = (
            f"{record['n_samples']} samples at {hr_rate} Hz, shorter than one patch "
            f"({min_samples}); lower --patch to include it"
        )
    if record["status"] == "ok":
        record["hr_path"] = hr_rel
    return record
