"""The fault corpus (tests/faults.py) against the readers and both flows.

1. The corpus is what it says: every kind is documented and really has its fault.
2. The readers turn every file into notes / samples or a `RejectedInput`, nothing else.
3. Both flows finish on the corpus; every file is in the manifest with the status its kind
   expects; every good file is processed; duplicates are found by content hash; manifest
   paths stay inside the corpus root.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import faults
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import symusic
from faults import TRACKS, Entry, Track, build_corpus
from flowrun import (
    flow_command,
    read_manifest,
    require_module,
    run_flow,
    tail,
)

NON_UTF8_PREFIX = "latin1_"
# The quick profile caps the files it takes (see test_default_profile_accounts_for_every_file);
# the fault corpus is about what happens to each file, so it lifts the cap.
ALL_FILES = ("--limit", "100000")
# A sound flow takes well under a minute on this corpus; one stuck on a bomb is failed sooner
# than the default flow timeout.
FAULT_FLOW_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[Track, tuple[Path, list[Entry]]]:
    out = {}
    for track in TRACKS:
        root = tmp_path_factory.mktemp(f"faults-{track}") / "corpus"
        out[track] = (root, build_corpus(root, track))
    return out


def by_kind(entries: list[Entry], kind: str) -> list[Entry]:
    found = [entry for entry in entries if entry.kind == kind]
    assert found, f"no entry of kind {kind}"
    return found


def is_readable_file(entry: Entry) -> bool:
    """Regular files a reader can be handed (not pipes, loops, dangling links, directories)."""
    try:
        return stat.S_ISREG(entry.path.stat().st_mode) and entry.expect != "absent"
    except OSError:
        return False


# --- 1. the corpus itself -----------------------------------------------------------------


def test_at_least_thirty_documented_kinds():
    assert len(faults.KINDS) >= 30
    for kind in faults.KINDS.values():
        assert len(kind.doc) > 20, kind.name
        assert kind.tracks, kind.name
    for track in TRACKS:
        assert len(faults.kinds_for(track)) >= 20, track


def test_reliability_doc_lists_every_kind():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "RELIABILITY.md").read_text()
    missing = [name for name in faults.KINDS if f"`{name}`" not in doc]
    assert not missing, f"docs/RELIABILITY.md does not list {missing}"


def test_every_entry_exists_with_a_unique_path(corpora):
    for track, (root, entries) in corpora.items():
        paths = [entry.path for entry in entries]
        assert len(paths) == len(set(paths)), track
        for entry in entries:
            assert os.path.lexists(entry.path), entry
            assert entry.path.is_relative_to(root)
        kinds = {entry.kind for entry in entries}
        assert kinds == {kind.name for kind in faults.kinds_for(track)}


def test_corpus_is_deterministic(tmp_path):
    for track in TRACKS:
        first = build_corpus(tmp_path / f"{track}-1", track)
        second = build_corpus(tmp_path / f"{track}-2", track)
        for a, b in zip(first, second, strict=True):
            assert (a.kind, a.path.name, a.expect) == (b.kind, b.path.name, b.expect)
            if is_readable_file(a) and a.expect != "absent" and os.access(a.path, os.R_OK):
                assert a.path.read_bytes() == b.path.read_bytes(), a


def test_file_system_faults_are_real(corpora):
    for track, (_, entries) in corpora.items():
        for entry in by_kind(entries, "fs_symlink_loop"):
            with pytest.raises(OSError, match="symbolic links") as info:
                entry.path.stat()
            assert info.value.errno == errno.ELOOP
        for entry in by_kind(entries, "fs_dangling_symlink"):
            assert entry.path.is_symlink()
            assert not entry.path.exists()
        (pipe,) = by_kind(entries, "fs_fifo")
        assert stat.S_ISFIFO(pipe.path.stat().st_mode)
        (name,) = by_kind(entries, "fs_non_utf8_name")
        with pytest.raises(UnicodeEncodeError):
            name.path.name.encode("utf-8")
        assert os.fsencode(name.path.name).startswith(NON_UTF8_PREFIX.encode())
        folder, inner = by_kind(entries, "fs_directory_named_like_file")
        assert folder.path.is_dir()
        assert inner.path.is_file()
        copies = by_kind(entries, "fs_duplicate_content")
        assert len({hashlib.sha256(c.path.read_bytes()).hexdigest() for c in copies}) == 1
        (unreadable,) = by_kind(entries, "fs_unreadable")
        assert stat.S_IMODE(unreadable.path.stat().st_mode) == 0
        if os.geteuid() != 0:
            assert not os.access(unreadable.path, os.R_OK), track


def test_midi_faults_are_real(corpora):
    _, entries = corpora["symbolic"]
    for entry in by_kind(entries, "good_midi_files"):
        score = symusic.Score(str(entry.path))
        assert sum(len(t.notes) for t in score.tracks) == 20
    (huge,) = by_kind(entries, "midi_huge_note_count")
    assert sum(len(t.notes) for t in symusic.Score(str(huge.path)).tracks) == 250_000
    (silence,) = by_kind(entries, "midi_hours_of_silence")
    notes = symusic.Score(str(silence.path)).tracks[0].notes
    assert notes[1].time - notes[0].time > 3 * 3600 * 2 * 480
    (empty,) = by_kind(entries, "midi_zero_length")
    assert empty.path.stat().st_size == 0
    (magic,) = by_kind(entries, "midi_wrong_magic")
    assert magic.path.read_bytes()[:4] == b"RIFF"
    (drums,) = by_kind(entries, "midi_only_drums")
    assert all(t.is_drum for t in symusic.Score(str(drums.path)).tracks)
    (tempo_zero,) = by_kind(entries, "midi_tempo_zero")
    assert list(symusic.Score(str(tempo_zero.path)).tempos.numpy()["mspq"]) == [0]


def test_score_faults_are_real(corpora):
    _, entries = corpora["symbolic"]
    (bomb,) = by_kind(entries, "score_mxl_zip_bomb")
    with zipfile.ZipFile(bomb.path) as archive:
        inflated = sum(info.file_size for info in archive.infolist())
    assert inflated > 200 * bomb.path.stat().st_size
    (empty,) = by_kind(entries, "score_empty_mxl")
    assert zipfile.ZipFile(empty.path).namelist() == []
    (not_zip,) = by_kind(entries, "score_non_zip_mxl")
    assert not zipfile.is_zipfile(not_zip.path)


def test_audio_faults_are_real(corpora):
    _, entries = corpora["audio"]
    for entry in by_kind(entries, "good_audio_files"):
        data, _ = sf.read(entry.path)
        assert len(data) > 10_000
        assert np.isfinite(data).all()
    (nan,) = by_kind(entries, "audio_nan_samples")
    assert np.isnan(sf.read(nan.path)[0]).any()
    (inf,) = by_kind(entries, "audio_inf_samples")
    assert np.isinf(sf.read(inf.path)[0]).any()
    (wide,) = by_kind(entries, "audio_32_channels")
    assert sf.info(wide.path).channels == 32
    (fast,) = by_kind(entries, "audio_192khz")
    assert sf.info(fast.path).samplerate == 192000
    (one,) = by_kind(entries, "audio_one_sample")
    assert sf.info(one.path).frames == 1
    (codec,) = by_kind(entries, "audio_unknown_codec")
    with pytest.raises(sf.LibsndfileError):
        sf.info(codec.path)
    (silence,) = by_kind(entries, "audio_hours_of_silence")
    info = sf.info(silence.path)
    assert info.frames / info.samplerate == faults.SILENCE_HOURS * 3600
    # Sparse: the three hours take (almost) no disk.
    assert silence.path.stat().st_blocks * 512 < 1 << 20


# --- 2. the readers -----------------------------------------------------------------------


def check_reader(entry: Entry, read) -> str:
    """Run `read(path)`; return "ok" or "rejected"; anything else than RejectedInput fails."""
    from datasets.io import RejectedInput

    try:
        read(entry.path)
    except RejectedInput as exc:
        assert exc.reason, entry
        assert str(entry.path.name) in str(exc) or exc.path == str(entry.path), entry
        return "rejected"
    return "ok"


def assert_expected(entry: Entry, status: str) -> None:
    if entry.expect in ("ok", "rejected"):
        assert status == entry.expect, f"{entry.kind} ({entry.path.name}): {status}"


def test_symbolic_reader_on_every_file(corpora):
    require_module("datasets/symbolic/corpus.py")
    require_module("flows/symbolic.py")
    from datasets.symbolic.corpus import read_piece
    from flows.symbolic import SymbolicParams

    max_notes = SymbolicParams().max_notes
    _, entries = corpora["symbolic"]
    for entry in filter(is_readable_file, entries):
        if entry.kind == "fs_temp_leftover" or entry.kind in faults.BOMBS["symbolic"]:
            continue
        status = check_reader(entry, lambda p: read_piece(p, max_notes))
        assert_expected(entry, status)


def test_zero_tempo_is_rejected_with_a_reason_and_no_warning(corpora):
    """A 0 us tempo used to give numpy's divide-by-zero RuntimeWarning and an infinite tempo
    column; it is a rejection that names the event, and nothing warns on the way."""
    require_module("datasets/symbolic/corpus.py")
    from datasets.io import RejectedInput
    from datasets.symbolic.corpus import read_piece

    _, entries = corpora["symbolic"]
    (entry,) = by_kind(entries, "midi_tempo_zero")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RejectedInput, match=r"invalid tempo: .*0 microseconds .* tick 0"):
            read_piece(entry.path, None)


def test_audio_reader_on_every_file(corpora):
    require_module("datasets/audio/files.py")
    require_module("flows/audio.py")
    from datasets.audio.files import load_audio
    from flows.audio import AudioParams

    params = AudioParams()
    _, entries = corpora["audio"]
    for entry in filter(is_readable_file, entries):
        if entry.kind == "fs_temp_leftover" or entry.kind in faults.BOMBS["audio"]:
            continue

        def read(path: Path) -> None:
            samples = load_audio(path, params.hr_rate, params.max_file_bytes, params.max_seconds)
            assert samples.dtype == np.float32
            assert samples.ndim == 1
            assert np.isfinite(samples).all()

        assert_expected(entry, check_reader(entry, read))


# --- 3. the flows -------------------------------------------------------------------------


def manifest_path_of(entry: Entry, root: Path) -> str:
    return PurePosixPath(entry.path.relative_to(root)).as_posix()


def find_row(entry: Entry, root: Path, rows: dict[str, dict]) -> dict | None:
    rel = manifest_path_of(entry, root)
    if rel in rows:
        return rows[rel]
    if entry.kind == "fs_non_utf8_name":
        # A name that is not UTF-8 cannot be a Parquet string as it is; any faithful escape
        # of it will do.
        escaped = [path for path in rows if path.startswith(NON_UTF8_PREFIX)]
        return rows[escaped[0]] if len(escaped) == 1 else None
    return None


def assert_manifest_paths_stay_inside(rows: list[dict], root: Path) -> None:
    for row in rows:
        path = PurePosixPath(row["path"])
        assert not path.is_absolute(), row
        assert ".." not in path.parts, row
        if not row["path"].startswith(NON_UTF8_PREFIX):
            assert os.path.lexists(root / path), row


def check_flow_outputs(
    track: Track, root: Path, entries: list[Entry], manifest: Path, processed_ids: set[str]
) -> None:
    rows_list = read_manifest(manifest)
    rows = {row["path"]: row for row in rows_list}
    assert len(rows) == len(rows_list), "a path appears twice in the manifest"
    assert_manifest_paths_stay_inside(rows_list, root)
    problems = []
    matched = set()
    for entry in entries:
        row = find_row(entry, root, rows)
        if entry.expect == "absent":
            if row is not None and (entry.path.is_dir() or row["status"] == "ok"):
                problems.append(f"{entry.kind}: {entry.path.name} must not be an ok row: {row}")
            if row is not None:
                matched.add(row["path"])
            continue
        if row is None:
            problems.append(f"{entry.kind}: {manifest_path_of(entry, root)!r} not in manifest")
            continue
        matched.add(row["path"])
        status = row["status"]
        if entry.expect in ("ok", "rejected") and status != entry.expect:
            problems.append(f"{entry.kind}: {row['path']} is {status} ({row['reason']})")
        if status == "rejected" and not row["reason"]:
            problems.append(f"{entry.kind}: {row['path']} rejected without a reason")
        if status == "ok" and row["path"] not in processed_ids:
            problems.append(f"{entry.kind}: {row['path']} is ok but was not processed")
    for kind in {entry.kind for entry in entries if entry.expect == "duplicate"}:
        group = [find_row(entry, root, rows) for entry in by_kind(entries, kind)]
        statuses = sorted(row["status"] for row in group if row)
        if statuses != ["duplicate", "ok"]:
            problems.append(f"{kind}: statuses {statuses}, expected one ok and one duplicate")
        elif len({row["sha256"] for row in group}) != 1:
            problems.append(f"{kind}: duplicates with different hashes: {group}")
    extra = set(rows) - matched
    if extra:
        problems.append(f"manifest rows for paths the corpus does not hold: {sorted(extra)}")
    assert not problems, f"{track} flow on the fault corpus:\n" + "\n".join(problems)


@pytest.mark.timeout(900)
def test_symbolic_flow_on_fault_corpus(corpora, prefect_api_url, tmp_path):
    require_module("flows/symbolic.py")
    root, entries = corpora["symbolic"]
    log = tmp_path / "flow.log"
    command = flow_command("symbolic", root, tmp_path / "data", *ALL_FILES)
    rc = run_flow(command, prefect_api_url, log, FAULT_FLOW_TIMEOUT_S)
    assert rc == 0, tail(log)
    out = tmp_path / "data" / "symbolic"
    pieces = set(pq.read_table(out / "notes.parquet", columns=["piece_id"])["piece_id"].to_pylist())
    check_flow_outputs("symbolic", root, entries, out / "manifest.parquet", pieces)


@pytest.mark.timeout(900)
def test_audio_flow_on_fault_corpus(corpora, prefect_api_url, tmp_path):
    require_module("flows/audio.py")
    root, entries = corpora["audio"]
    log = tmp_path / "flow.log"
    command = flow_command("audio", root, tmp_path / "data", *ALL_FILES)
    rc = run_flow(command, prefect_api_url, log, FAULT_FLOW_TIMEOUT_S)
    assert rc == 0, tail(log)
    out = tmp_path / "data" / "audio"
    files = pq.read_table(out / "files.parquet").to_pylist()
    for record in files:
        assert (tmp_path / "data" / "audio" / "hr" / Path(record["hr_path"]).name).exists()
    check_flow_outputs("audio", root, entries, out / "manifest.parquet", {f["path"] for f in files})


@pytest.mark.timeout(900)
@pytest.mark.parametrize("track", ["symbolic", "audio"])
def test_default_profile_accounts_for_every_file(track, prefect_api_url, tmp_path):
    """The default (quick) profile caps how many files it uses; the files over the cap must
    still be manifest rows (with a reason), never silently left out."""
    require_module(f"flows/{track}.py")
    root = tmp_path / "corpus"
    root.mkdir()
    count = 30
    for seed in range(count):
        faults.put(
            root,
            f"piece_{seed:02d}{faults.EXTENSION[track]}",
            faults.good_bytes(track, seed),
            "good",
            "ok",
        )
    log = tmp_path / "flow.log"
    data_dir = tmp_path / "data"
    rc = run_flow(flow_command(track, root, data_dir, "--profile", "quick"), prefect_api_url, log)
    assert rc == 0, tail(log)
    rows = read_manifest(data_dir / track / "manifest.parquet")
    listed = sorted(row["path"] for row in rows)
    assert len(listed) == count, f"{count} files in the corpus, {len(listed)} in the manifest"
