"""The symbolic data flow under a Prefect test server, on a small corpus of real and bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import music21
import numpy as np
import pandas as pd
import pytest

from datasets.symbolic.tokenizer import Vocab, decode, quantize
from flows.symbolic import SymbolicParams, symbolic_flow

MUSIC21 = Path(music21.__file__).parent
PRIMITIVE = MUSIC21 / "midi" / "testPrimitive"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for name in ["test01.mid", "test05.mid", "test11.mid", "test17.mid"]:
        shutil.copy(PRIMITIVE / name, root / name)
    shutil.copy(MUSIC21 / "omr" / "k525short.mid", root / "k525short.mid")
    (root / "scores").mkdir()
    shutil.copy(MUSIC21 / "corpus" / "bach" / "bwv269.mxl", root / "scores" / "bwv269.mxl")
    (root / "z-copies").mkdir()
    shutil.copy(PRIMITIVE / "test01.mid", root / "z-copies" / "test01 again.mid")
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.mid").write_bytes(b"")
    (bad / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\xff\xff")
    data = (MUSIC21 / "omr" / "k525short.mid").read_bytes()
    (bad / "truncated.mid").write_bytes(data[: len(data) // 3])
    (bad / "silent.mid").write_bytes(
        b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x00\x00\x04\x00\xff\x2f\x00"
    )
    (bad / "letter.mid").write_text("Dear reader, this is not music.")
    (bad / "broken.musicxml").write_text("<score-partwise><part id='P1'>")
    (root / "notes.txt").write_text("not a corpus file: never discovered")
    return root


def _run(corpus: Path, data_dir: Path, **overrides):
    params = SymbolicParams(
        data_dir=str(data_dir), corpus=str(corpus), stages=["data"], profile="full", **overrides
    )
    return symbolic_flow(params)


def _rejected_artifact() -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    # Other tests in the session publish the same key: take the newest.
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["symbolic-rejected"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return str(found[0].data) if found else ""


def _parquet_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


def test_flow_writes_the_dataset_and_is_byte_identical(prefect_harness, corpus, tmp_path):
    result = _run(corpus, tmp_path / "a")
    out = tmp_path / "a" / "symbolic"
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 13
    assert result.n_files == 13
    status = dict(zip(manifest["path"], manifest["status"], strict=True))
    reasons = dict(zip(manifest["path"], manifest["reason"], strict=True))
    assert [p for p, s in status.items() if s == "ok"] == [
        "k525short.mid", "scores/bwv269.mxl", "test01.mid", "test05.mid", "test11.mid",
        "test17.mid",
    ]  # fmt: skip
    assert status["z-copies/test01 again.mid"] == "duplicate"
    assert reasons["z-copies/test01 again.mid"] == "same content as test01.mid"
    for name, reason in [
        ("empty.mid", "empty file"),
        ("corrupt.mid", "corrupt or truncated"),
        ("truncated.mid", "corrupt or truncated"),
        ("silent.mid", "no notes"),
        ("letter.mid", "not a MIDI file"),
        ("broken.musicxml", "music21 cannot read it"),
    ]:
        assert status[f"bad/{name}"] == "rejected", name
        assert reason in reasons[f"bad/{name}"], name
    assert result.n_ok == 6
    assert result.n_rejected == 6
    assert result.n_duplicate == 1
    assert "bad/letter.mid" in _rejected_artifact()

    vocab = Vocab.from_json((out / "vocab.json").read_text())
    notes = pd.read_parquet(out / "notes.parquet")
    tokens = pd.concat(pd.read_parquet(p) for p in sorted((out / "tokens").glob("*.parquet")))
    assert sorted(notes["piece_id"].unique()) == sorted(p for p, s in status.items() if s == "ok")
    assert len(tokens) == 6 * 12
    assert result.n_sequences == 72
    for piece, rows in tokens.groupby("piece_id"):
        assert sorted(rows["transpose"]) == list(range(-5, 7))
        assert rows["split"].nunique() == 1  # all 12 keys of a piece in one split
        assert (notes.loc[notes["piece_id"] == piece, "split"] == rows["split"].iloc[0]).all()
        original = rows[rows["transpose"] == 0].iloc[0]
        assert len(original["tokens"]) == len(original["beats"])
        piece_notes = notes[(notes["piece_id"] == piece) & ~notes["is_drum"]]
        q = quantize(piece_notes["onset"], piece_notes["duration"], piece_notes["pitch"], 4, 64)
        for got, want in zip(decode(original["tokens"], vocab), q[:3], strict=True):
            np.testing.assert_array_equal(got, want)
        up = rows[rows["transpose"] == 6].iloc[0]
        np.testing.assert_array_equal(decode(up["tokens"], vocab)[2], q.pitch + 6)

    # A second run on the same inputs, elsewhere and in other batches, writes the same bytes.
    again = _run(corpus, tmp_path / "b", batch_size=3)
    assert _parquet_bytes(out) == _parquet_bytes(tmp_path / "b" / "symbolic")
    assert again.n_parsed == 11
    assert not again.reused

    # A rerun with nothing changed re-uses everything; one new file parses only that file.
    rerun = _run(corpus, tmp_path / "a")
    assert rerun.reused
    assert rerun.n_parsed == 0
    assert rerun.n_parse_reused == 11
    added = tmp_path / "grown"
    shutil.copytree(corpus, added)
    shutil.copy(PRIMITIVE / "test06.mid", added / "test06.mid")
    grown = _run(added, tmp_path / "a")
    assert grown.n_parsed == 1
    assert grown.n_ok == 7
    assert not grown.reused


def test_flow_on_a_jsb_file_keeps_its_split(prefect_harness, tmp_path):
    chorale = [[72, 67, 64, 48]] * 8 + [[74, 65, 62, 47]] * 8 + [[72, 64, 60, 48]] * 16
    data = {split: [chorale] * 3 for split in ("train", "valid", "test")}
    path = tmp_path / "jsb.json"
    path.write_text(json.dumps(data))
    result = _run(path, tmp_path / "data", limit=2)
    assert (result.pieces_train, result.pieces_valid, result.pieces_test) == (2, 2, 2)
    valid = pd.read_parquet(tmp_path / "data" / "symbolic" / "tokens" / "valid.parquet")
    assert sorted(valid["piece_id"].unique()) == ["jsb.json:valid/0000", "jsb.json:valid/0001"]
    assert (valid["bar_steps"] == 16).all()


@pytest.mark.slow  # minutes: music21 parses abc collections of hundreds of tunes slowly
def test_the_music21_corpus_splits_by_work(prefect_harness, tmp_path):
    """`--corpus music21` at the quick profile: a spread of music21's works, every file in the
    manifest, every tune of an abc collection a piece of its own, all 12 keys of a piece in one
    split."""
    params = SymbolicParams(
        data_dir=str(tmp_path / "data"), corpus="music21", stages=["data"], limit=8
    )
    result = symbolic_flow(params)
    assert result.n_files == 8
    assert result.n_ok + result.n_rejected == 8
    assert result.n_pieces > result.n_ok  # abc files hold many tunes each
    tokens = pd.concat(
        pd.read_parquet(tmp_path / "data" / "symbolic" / "tokens" / f"{s}.parquet")
        for s in ("train", "valid", "test")
    )
    assert (tokens.groupby("piece_id")["split"].nunique() == 1).all()
    assert tokens["piece_id"].str.contains(".abc:").any()
