"""kill -9 at random points of each whole flow: no partial file is ever visible, and the rerun
completes with outputs byte-identical to an uninterrupted run.

Each flow runs as its users run it (`python -m flows.<track> ...`, every default stage: symbolic
data, train, evaluate, generate; audio data, train, evaluate, superres) in its own process group,
at the `tiny` profile so one run takes seconds. An uninterrupted reference run records when each
file appears under the data dir, from its first write to its last (the busy window); each trial
starts a fresh run in the same data dir path and SIGKILLs the whole group at a seeded random
moment of that window, counted from the trial's own first write (so kills land in the data
stage, in training between and during checkpoint writes, in evaluation and in generation; odd
trials kill the resuming rerun too). It then checks that every visible file parses, reruns to
completion and compares every output byte for byte with the reference. Temporary files of
atomic writes (`.<name>.<random>.tmp`) are not outputs; readers never look at them. Each trial
prints where its kills landed (`pytest -s`).
"""

from __future__ import annotations

import json
import os
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
from flowrun import (
    FLOW_TIMEOUT_S,
    flow_command,
    kill_group,
    require_module,
    run_flow,
    start_flow,
    tail,
)
from run_files import comparable_bytes
from safetensors import safe_open

TRIALS = 20
# The default run's trials per flow (the other 18 are slow-marked): an odd one, which kills the
# run and then the rerun that resumes from its leftovers, and an even one, which kills once.
DEFAULT_TRIALS = (1, 2)
TEMP_FILE = re.compile(r"^\..+\.tmp$")
POLL_S = 0.02

# A small corpus per track: good files (several parse batches, so there is work to kill in)
# and a few bad ones, so rejections are written and cached too.
CORPUS_KINDS = {
    "symbolic": ["good_midi_files", "midi_truncated", "midi_zero_notes", "fs_duplicate_content"],
    "audio": ["good_audio_files", "audio_nan_samples", "audio_zero_length", "fs_duplicate_content"],
}
STAGES = {
    "symbolic": ["data", "train", "evaluate", "generate"],
    "audio": ["data", "train", "evaluate", "superres"],
}
COMMON_ARGS = ["--profile", "tiny", "--limit", "1000", "--batch-size", "2", "--workers", "2"]
# A short continuation: generation is one stage among four, not most of the run.
FLOW_ARGS = {"symbolic": [*COMMON_ARGS, "--length", "64"], "audio": COMMON_ARGS}


def stage_of(track: Track, relative: str) -> str:
    """The stage that writes a file (for saying where a kill landed)."""
    if relative.startswith("reports/") and relative != "reports/audio_signals.png":
        return "generate" if track == "symbolic" else "superres"
    if relative.startswith("models/"):
        return "evaluate" if relative.endswith("/metrics.json") else "train"
    return "data"


def write_kill_corpus(root: Path, track: Track) -> None:
    root.mkdir(parents=True)
    for name in CORPUS_KINDS[track]:
        KINDS[name].write(root, track)


def visible_files(data_dir: Path) -> list[Path]:
    """The whole files under `data_dir`. Polled while a run writes: a directory that goes away
    mid-walk (a checkpoint's pending directory, moved in on commit) is skipped by `os.walk`,
    where `rglob` raised."""
    found = [
        Path(root) / name
        for root, _, names in os.walk(data_dir)
        for name in names
        if not TEMP_FILE.match(name)
    ]
    return sorted(p for p in found if p.is_file())


def snapshot(data_dir: Path) -> dict[str, bytes]:
    files = visible_files(data_dir)
    return {p.relative_to(data_dir).as_posix(): comparable_bytes(p) for p in files}


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
            for key in handle.keys():  # noqa: SIM118 - safe_open is not iterable
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
    """An uninterrupted run: its outputs, when each file appeared, and how long it wrote."""

    def __init__(self, track: Track, base: Path, api_url: str) -> None:
        self.track = track
        self.corpus = base / "corpus"
        self.data_dir = base / "data"
        self.api_url = api_url
        write_kill_corpus(self.corpus, track)
        self.command = flow_command(
            track, self.corpus, self.data_dir, *FLOW_ARGS[track], stages=STAGES[track]
        )
        log = base / "reference.log"
        process = start_flow(self.command, api_url, log)
        start, appeared = time.monotonic(), {}
        try:
            while process.poll() is None:
                now = time.monotonic() - start
                for path in visible_files(self.data_dir) if self.data_dir.exists() else []:
                    appeared.setdefault(path.relative_to(self.data_dir).as_posix(), now)
                if now > 600:
                    pytest.fail(f"reference {track} run still going after 600 s: {tail(log)}")
                time.sleep(POLL_S)
        finally:
            kill_group(process)
        assert process.returncode == 0, tail(log)
        self.outputs = snapshot(self.data_dir)
        assert self.outputs, "the reference run wrote nothing"
        assert not partial_files(self.data_dir)
        for name in self.outputs:  # written in the last poll interval
            appeared.setdefault(name, time.monotonic() - start)
        # Outputs in the order they appeared (files rewritten in place, such as checkpoints,
        # count from their first version).
        self.order = sorted(self.outputs, key=lambda name: appeared[name])
        times = sorted(appeared.values())
        self.first_write = times[0]
        # From the first file to just after the last one: kills land while the flow writes,
        # not during interpreter start-up or shutdown.
        self.busy = times[-1] - times[0] + 0.5
        self.stages = {stage: [] for stage in STAGES[track]}
        for name in self.order:
            self.stages[stage_of(track, name)].append(appeared[name])
        # Trials run at the very same path, so outputs that name paths compare equal.
        shutil.rmtree(self.data_dir)

    def landed(self) -> str:
        """Where a kill landed: the stage of the first reference output not yet written."""
        files = visible_files(self.data_dir) if self.data_dir.exists() else []
        present = {path.relative_to(self.data_dir).as_posix() for path in files}
        for name in self.order:
            if name not in present:
                return f"in {stage_of(self.track, name)} (before {name})"
        return "after the last write (in the flow's shutdown)"


@pytest.fixture(scope="module")
def references() -> dict[Track, Reference]:
    """Reference runs, made on first use: only for the tracks the selected tests need."""
    return {}


def reference_for(track: Track, references: dict, tmp_path_factory, api_url: str) -> Reference:
    if track not in references:
        reference = Reference(track, tmp_path_factory.mktemp(f"kill-{track}"), api_url)
        references[track] = reference
        print(f"\n{track} reference: first write at {reference.first_write:.1f} s after start;")
        for stage, times in reference.stages.items():
            first = f"{max(times[0] - reference.first_write, 0.0):.2f}" if times else "-"
            last = f"{max(times[-1] - reference.first_write, 0.0):.2f}" if times else "-"
            print(f"  {stage} files appear {first}..{last} s after it")
    return references[track]


def file_stamps(data_dir: Path) -> set[tuple[str, int, int]]:
    """Every file (temporary ones too) with its modification time and size."""
    if not data_dir.exists():
        return set()
    stamps = set()
    for path in data_dir.rglob("*"):
        try:
            info = path.stat()
        except FileNotFoundError:  # renamed or removed while we looked
            continue
        if path.is_file():
            stamps.add((path.as_posix(), info.st_mtime_ns, info.st_size))
    return stamps


def run_and_kill(reference: Reference, offset: float, log: Path) -> str:
    """Start the flow, SIGKILL its group `offset` seconds after its first write (a file new,
    changed or removed since the start), and say where the kill landed.

    The moment counts from the run's own first write, not from its start: start-up time (the
    interpreter, Prefect, the server) varies more on a shared machine than the work does.
    """
    before = file_stamps(reference.data_dir)
    process = start_flow(reference.command, reference.api_url, log)
    started = time.monotonic()
    first_write = None
    while process.poll() is None:
        now = time.monotonic()
        if first_write is None and file_stamps(reference.data_dir) != before:
            first_write = now
        if first_write is not None and now >= first_write + offset:
            break
        if now - started > FLOW_TIMEOUT_S:
            kill_group(process)
            pytest.fail(f"{' '.join(reference.command)} still running after {FLOW_TIMEOUT_S} s")
        time.sleep(POLL_S)
    finished = process.poll() is not None
    kill_group(process)
    if finished:
        return f"{offset:.2f} s after its first write: after the run ended"
    return f"{offset:.2f} s after its first write, {reference.landed()}"


def kill_and_rerun(reference: Reference, trial: int) -> None:
    """Odd trials kill twice (the run, then the rerun that resumes from its leftovers) before
    the final rerun; even trials once."""
    rng = random.Random(f"{reference.track}-{trial}")
    # The first kills of the TRIALS trials are stratified: each falls in its own 1/TRIALS of
    # the busy window (which one is a seeded shuffle), so together they cover all of it.
    stratum = random.Random(reference.track).sample(range(TRIALS), TRIALS)[trial]
    offsets = [reference.busy * (stratum + rng.random()) / TRIALS]
    if trial % 2:
        offsets.append(rng.uniform(0.0, reference.busy))
    log = reference.data_dir.parent / f"trial-{trial}.log"
    if reference.data_dir.exists():
        shutil.rmtree(reference.data_dir)
    kills = []
    for offset in offsets:
        kills.append(run_and_kill(reference, offset, log))
        broken = partial_files(reference.data_dir) if reference.data_dir.exists() else []
        assert not broken, f"trial {trial}: killed at {kills}, partial files:\n" + "\n".join(broken)
    print(f"\n{reference.track} trial {trial}: killed at {'; then '.join(kills)}")
    rc = run_flow(reference.command, reference.api_url, log)
    assert rc == 0, f"trial {trial}: rerun after kills at {kills} failed:\n{tail(log)}"
    problems = diff(reference.outputs, snapshot(reference.data_dir))
    assert not problems, (
        f"trial {trial}: killed at {kills}; the rerun differs from an uninterrupted run (if "
        "only cache keys and stamps differ, check the code did not change during the test):\n"
        + "\n".join(problems)
    )


TRIAL_PARAMS = [
    i if i in DEFAULT_TRIALS else pytest.param(i, marks=pytest.mark.slow) for i in range(TRIALS)
]


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("trial", TRIAL_PARAMS)
@pytest.mark.parametrize("track", ["symbolic", "audio"])
def test_kill_then_rerun(track, trial, references, tmp_path_factory, prefect_api_url):
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
