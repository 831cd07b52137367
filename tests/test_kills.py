"""kill -9 at random points of each flow: no partial file is ever visible, and the rerun
completes with outputs byte-identical to an uninterrupted run.

Each flow runs as its users run it (`python -m flows.<track> ...`) in its own process group.
An uninterrupted reference run records when files appear under the data dir; each trial starts
a fresh run in the same data dir path, SIGKILLs the whole group at a seeded random moment in
that busy window (odd trials kill the resuming rerun too), checks that every visible file
parses, reruns to completion and compares
every output byte for byte with the reference. Temporary files of atomic writes
(`.<name>.<random>.tmp`) are not outputs; readers never look at them.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf
import symusic
from faults import KINDS, Track
from flowrun import (  # noqa: F401 - prefect_api_url is a fixture
    flow_command,
    kill_group,
    prefect_api_url,
    require_module,
    run_flow,
    start_flow,
    tail,
)
from safetensors import safe_open

TRIALS = 20
DEFAULT_TRIALS = 2  # per flow in the default run; the other 18 are slow-marked
TEMP_FILE = re.compile(r"^\..+\.tmp$")
POLL_S = 0.05

# A small corpus per track: good files (several parse batches, so there is work to kill in)
# and a few bad ones, so rejections are written and cached too.
CORPUS_KINDS = {
    "symbolic": ["good_midi_files", "midi_truncated", "midi_zero_notes", "fs_duplicate_content"],
    "audio": ["good_audio_files", "audio_nan_samples", "audio_zero_length", "fs_duplicate_content"],
}
FLOW_ARGS = ["--limit", "1000", "--batch-size", "2", "--workers", "2"]


def write_kill_corpus(root: Path, track: Track) -> None:
    root.mkdir(parents=True)
    for name in CORPUS_KINDS[track]:
        KINDS[name].write(root, track)


def visible_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.rglob("*") if p.is_file() and not TEMP_FILE.match(p.name))


def snapshot(data_dir: Path) -> dict[str, bytes]:
    return {p.relative_to(data_dir).as_posix(): p.read_bytes() for p in visible_files(data_dir)}


def check_parses(path: Path) -> None:
    """Raise if `path` is not a whole file of its type."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pq.read_table(path)
    elif suffix == ".json":
        json.loads(path.read_text())
    elif suffix in (".wav", ".flac", ".ogg", ".aiff"):
        sf.read(path)
    elif suffix in (".mid", ".midi"):
        symusic.Score(str(path))
    elif suffix == ".png":
        data = path.read_bytes()
        if not (data.startswith(b"\x89PNG\r\n\x1a\n") and data[-12:-4] == b"\x00\x00\x00\x00IEND"):
            raise ValueError("not a whole PNG")
    elif suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                handle.get_tensor(key)
    elif path.stat().st_size == 0:
        raise ValueError("empty file")


def partial_files(data_dir: Path) -> list[str]:
    broken = []
    for path in visible_files(data_dir):
        try:
            check_parses(path)
        except Exception as exc:  # any failure to parse is a partial file
            broken.append(f"{path.relative_to(data_dir)}: {type(exc).__name__}: {exc}")
    return broken


def diff(reference: dict[str, bytes], actual: dict[str, bytes]) -> list[str]:
    problems = [f"missing: {name}" for name in sorted(set(reference) - set(actual))]
    problems += [f"extra: {name}" for name in sorted(set(actual) - set(reference))]
    problems += [
        f"differs: {name}"
        for name in sorted(set(reference) & set(actual))
        if reference[name] != actual[name]
    ]
    return problems


class Reference:
    """An uninterrupted run: its outputs, and the window in which it wrote files."""

    def __init__(self, track: Track, base: Path, api_url: str) -> None:
        self.track = track
        self.corpus = base / "corpus"
        self.data_dir = base / "data"
        self.api_url = api_url
        write_kill_corpus(self.corpus, track)
        self.command = flow_command(track, self.corpus, self.data_dir, *FLOW_ARGS)
        log = base / "reference.log"
        process = start_flow(self.command, api_url, log)
        start, seen, changes = time.monotonic(), 0, []
        try:
            while process.poll() is None:
                count = sum(1 for _ in self.data_dir.rglob("*")) if self.data_dir.exists() else 0
                if count != seen:
                    seen = count
                    changes.append(time.monotonic() - start)
                if time.monotonic() - start > 600:
                    pytest.fail(f"reference {track} run still going after 600 s: {tail(log)}")
                time.sleep(POLL_S)
        finally:
            kill_group(process)
        assert process.returncode == 0, tail(log)
        # From just before the first file appears to just after the last one does: kills land
        # while the flow writes, not during interpreter start-up or shutdown.
        self.window = (max(0.0, changes[0] - 1.0), changes[-1] + 0.5) if changes else (0, 1)
        self.outputs = snapshot(self.data_dir)
        assert self.outputs, "the reference run wrote nothing"
        assert not partial_files(self.data_dir)
        # Trials run at the very same path, so outputs that name paths compare equal.
        shutil.rmtree(self.data_dir)


@pytest.fixture(scope="module")
def references() -> dict[Track, Reference]:
    """Reference runs, made on first use: only for the tracks the selected tests need."""
    return {}


def reference_for(track: Track, references: dict, tmp_path_factory, api_url: str) -> Reference:
    if track not in references:
        references[track] = Reference(track, tmp_path_factory.mktemp(f"kill-{track}"), api_url)
    return references[track]


def kill_and_rerun(reference: Reference, trial: int) -> None:
    """Odd trials kill twice (the run, then the rerun that resumes from its leftovers) before
    the final rerun; even trials once."""
    rng = random.Random(f"{reference.track}-{trial}")
    log = reference.data_dir.parent / f"trial-{trial}.log"
    if reference.data_dir.exists():
        shutil.rmtree(reference.data_dir)
    kills = []
    for _ in range(1 + trial % 2):
        delay = rng.uniform(*reference.window)
        process = start_flow(reference.command, reference.api_url, log)
        deadline = time.monotonic() + delay
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
        finished = process.poll() is not None
        kill_group(process)
        kills.append(f"{delay:.2f} s ({'after' if finished else 'before'} the run ended)")
        broken = partial_files(reference.data_dir) if reference.data_dir.exists() else []
        assert not broken, f"trial {trial}: killed at {kills}, partial files:\n" + "\n".join(broken)
    rc = run_flow(reference.command, reference.api_url, log)
    assert rc == 0, f"trial {trial}: rerun after kills at {kills} failed:\n{tail(log)}"
    problems = diff(reference.outputs, snapshot(reference.data_dir))
    assert not problems, (
        f"trial {trial}: killed at {kills}; the rerun differs from an uninterrupted run (if "
        "only cache keys and stamps differ, check the code did not change during the test):\n"
        + "\n".join(problems)
    )


TRIAL_PARAMS = [
    pytest.param(i, marks=pytest.mark.slow) if i >= DEFAULT_TRIALS else i for i in range(TRIALS)
]


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("trial", TRIAL_PARAMS)
@pytest.mark.parametrize("track", ["symbolic", "audio"])
def test_kill_then_rerun(track, trial, references, tmp_path_factory, prefect_api_url):  # noqa: F811
    require_module(f"flows/{track}.py")
    reference = reference_for(track, references, tmp_path_factory, prefect_api_url)
    kill_and_rerun(reference, trial)


def test_partial_file_detector_catches_half_files(tmp_path):
    """The check above must be able to fail: a half-written Parquet, JSON or WAV is caught."""
    import pyarrow as pa
    from faults import good_wav

    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.table({"x": list(range(1000))}), whole)
    data = whole.read_bytes()
    (tmp_path / "half.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "half.json").write_text('{"key": [1, 2')
    wav = good_wav(0)
    (tmp_path / "half.wav").write_bytes(wav[:30])
    (tmp_path / ".ok.parquet.abc123.tmp").write_bytes(b"half")
    broken = partial_files(tmp_path)
    assert sorted(line.split(":")[0] for line in broken) == [
        "half.json",
        "half.parquet",
        "half.wav",
    ]
