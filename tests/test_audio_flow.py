"""The audio flow's data stage under a Prefect test server, on small real corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf
from audio_files import write_bad_files, write_good_files, write_mix_corpus

from flows.audio import AudioParams, audio_flow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audio-corpus")
    write_good_files(root, seconds=0.7)
    write_bad_files(root / "bad")
    return root


def params(corpus: Path | str, data_dir: Path, **extra) -> AudioParams:
    return AudioParams(
        **{
            "data_dir": str(data_dir),
            "corpus": str(corpus),
            "stages": ["data"],
            "patch": 2048,
            "stride": 1024,
            "batch_size": 3,
            **extra,
        }
    )


PATHS = {"data_dir", "manifest", "files", "pairs_dir", "signal_report"}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "_stamp.json"
    }


def test_data_stage_end_to_end(prefect_harness, corpus: Path, tmp_path: Path) -> None:
    first = audio_flow(params(corpus, tmp_path / "a", filter="random", bits=10))
    bad = write_bad_files(tmp_path / "expected")
    n_bad_ok = sum(reason == "" for reason in bad.values())
    assert first.n_files == 7 + len(bad)
    assert first.n_ok == 7 + n_bad_ok
    assert first.n_rejected == len(bad) - n_bad_ok
    assert first.n_loaded == first.n_ok
    assert not first.reused
    assert first.files_train + first.files_valid + first.files_test == first.n_ok
    assert first.pairs_train > 0
    assert first.shards_train >= 1
    manifest = pq.read_table(first.manifest).to_pylist()
    assert len(manifest) == first.n_files
    assert all(row["reason"] for row in manifest if row["status"] == "rejected")
    assert Path(first.signal_report).stat().st_size > 10_000

    # Another data directory, same inputs: the same bytes everywhere (hr WAVs, shards, tables).
    second = audio_flow(params(corpus, tmp_path / "b", filter="random", bits=10))
    assert second.model_dump(exclude=PATHS) == (first.model_dump(exclude=PATHS))
    assert tree_bytes(tmp_path / "a" / "audio") == tree_bytes(tmp_path / "b" / "audio")

    # Nothing changed: everything is reused; a changed parameter redoes only the pairs.
    again = audio_flow(params(corpus, tmp_path / "a", filter="random", bits=10))
    assert again.reused
    assert again.n_loaded == 0
    assert again.n_pairs_reused == again.n_ok
    other = audio_flow(params(corpus, tmp_path / "a", filter="cheby"))
    assert not other.reused
    assert other.n_loaded == 0
    assert other.n_pairs_reused == 0
    meta = pq.read_schema(next(Path(other.pairs_dir).glob("train-*.parquet"))).metadata
    assert meta[b"filter"] == b"cheby"
    assert meta[b"bits"] == b""


def test_bytebeat_formula_file(prefect_harness, tmp_path: Path) -> None:
    formulas = tmp_path / "formulas.txt"
    formulas.write_text("t*(t>>5|t>>8)\nt*(t>>11&t>>8&123&t>>3)\nos.system(1)\n(t>>4)*t\n")
    result = audio_flow(params(formulas, tmp_path / "d", hr_rate=16000))
    assert (result.n_files, result.n_ok, result.n_rejected) == (4, 3, 1)
    rejected = [r for r in pq.read_table(result.manifest).to_pylist() if r["status"] != "ok"]
    assert rejected[0]["path"] == "formulas.txt:3"
    assert "unexpected 'o'" in rejected[0]["reason"]


def test_bach_default_corpus_renders_with_fluidsynth(prefect_harness, tmp_path: Path) -> None:
    result = audio_flow(params("bach", tmp_path / "d", limit=3, program=0))
    assert result.n_ok == 3
    assert result.pairs_train > 0
    wavs = sorted((tmp_path / "d" / "corpora" / "bach_wav" / "0").glob("*.wav"))
    assert len(wavs) == 3
    assert all(sf.info(str(w)).duration > 10 for w in wavs)
    mtimes = [w.stat().st_mtime_ns for w in wavs]
    audio_flow(params("bach", tmp_path / "d", limit=3, program=0))
    assert [w.stat().st_mtime_ns for w in wavs] == mtimes  # rendered once, then cached


def test_a_mix_of_corpora_keeps_each_part_apart(prefect_harness, tmp_path: Path) -> None:
    """`a+b`: each part's files under its name, a file the first part had is a duplicate in
    the second, the split keeps each part's directories whole, and the evaluation reports
    every part beside the whole."""
    mix = write_mix_corpus(tmp_path)
    result = audio_flow(
        params(
            mix,
            tmp_path / "d",
            profile="tiny",
            stages=["data", "train", "evaluate"],
            split_by="dir",
            valid_fraction=0.25,
            test_fraction=0.25,
        )
    )
    manifest = {row["path"]: row for row in pq.read_table(result.manifest).to_pylist()}
    assert {path.split("/")[0] for path in manifest} == {"speech", "music"}
    copy = manifest["music/song/copy.wav"]
    assert (copy["status"], copy["reason"]) == (
        "duplicate",
        "same content as speech/anna/take0.wav",
    )
    files = pq.read_table(Path(result.files)).to_pylist()
    split_of_group: dict[str, set[str]] = {}
    for row in files:
        split_of_group.setdefault("/".join(row["path"].split("/")[:2]), set()).add(row["split"])
    assert len(split_of_group) == 5
    assert all(len(splits) == 1 for splits in split_of_group.values())
    metrics = json.loads(Path(result.metrics["metrics"]).read_text())
    by_source = metrics["by_source"]
    tested = {row["path"].split("/")[0] for row in files if row["split"] == "test"}
    assert set(by_source) == tested
    assert sum(part["n_files"] for part in by_source.values()) == metrics["n_files"]
