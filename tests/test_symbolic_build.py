"""The dataset build steps without Prefect: cache reuse, odd failures, bar lengths, splits."""

from __future__ import annotations

import shutil
from pathlib import Path

import music21
import pandas as pd
import pytest

import datasets.symbolic.parse as parse
from datasets.inventory import inventory
from datasets.splits import choose_splits
from datasets.symbolic.dataset import write_dataset
from datasets.symbolic.tokenizer import Vocab, bar_steps
from datasets.symbolic.tokens import tokenize_notes

PRIMITIVE = Path(music21.__file__).parent / "midi" / "testPrimitive"


@pytest.fixture
def entries(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ["test01.mid", "test14.mid"]:
        shutil.copy(PRIMITIVE / name, corpus / name)
    return inventory(sorted(corpus.iterdir()), corpus, max_file_bytes=10**6)


def test_parse_is_cached_by_content(entries, tmp_path):
    first = [parse.parse_entry(e, tmp_path / "cache", None) for e in entries]
    again = [parse.parse_entry(e, tmp_path / "cache", None) for e in entries]
    assert [r["parsed"] for r in first] == [True, True]
    assert [(r["parsed"], r["reused"]) for r in again] == [(False, True)] * 2
    assert [r["pieces"] for r in again] == [[["test01.mid", ""]], [["test14.mid", ""]]]
    other_limit = parse.parse_entry(entries[0], tmp_path / "cache", 5)
    assert other_limit["status"] == "rejected"
    assert "max_notes=5" in other_limit["reason"]


def test_an_unexpected_reader_failure_rejects_only_that_file(entries, tmp_path, monkeypatch):
    real = parse.read_pieces

    def flaky(path, max_notes=None):
        if Path(path).name == "test01.mid":
            raise MemoryError("simulated")
        return real(path, max_notes)

    monkeypatch.setattr(parse, "read_pieces", flaky)
    records = [parse.parse_entry(e, tmp_path / "cache", None) for e in entries]
    assert records[0]["status"] == "rejected"
    assert "MemoryError: simulated" in records[0]["reason"]
    assert records[1]["status"] == "ok"
    monkeypatch.setattr(parse, "read_pieces", real)  # the failure was not cached
    assert parse.parse_entry(entries[0], tmp_path / "cache", None)["status"] == "ok"


def test_tokenize_notes_uses_the_first_time_signature(entries, tmp_path):
    record = parse.parse_entry(entries[1], tmp_path / "cache", None)  # test14: 6/8
    notes = pd.read_parquet(record["notes_cache"])
    rows = tokenize_notes(notes, Vocab())
    assert [r["transpose"] for r in rows] == list(range(-5, 7))
    assert {r["bar_steps"] for r in rows} == {bar_steps(6, 8, 4)} == {12}


@pytest.mark.parametrize(
    ("num", "den", "steps"), [(4, 4, 16), (3, 4, 12), (6, 8, 12), (2, 2, 16), (7, 16, 7)]
)
def test_bar_steps(num, den, steps):
    assert bar_steps(num, den, 4) == steps


def test_choose_splits_keeps_fixed_splits_and_limits_them():
    records = [
        {"pieces": [[f"jsb.json:{s}/{i:04d}", s] for s in ("train", "test") for i in range(3)]},
        {"pieces": [["a.mid", ""]]},
    ]
    splits = choose_splits(records, seed=0, valid_fraction=0.1, test_fraction=0.1, limit=2)
    assert splits == {
        "a.mid": "train",
        "jsb.json:test/0000": "test",
        "jsb.json:test/0001": "test",
        "jsb.json:train/0000": "train",
        "jsb.json:train/0001": "train",
    }


def test_a_corpus_of_only_bad_files_still_writes_every_table(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "letter.mid").write_text("not music")
    entries = inventory([corpus / "letter.mid"], corpus, max_file_bytes=10**6)
    records = [parse.parse_entry(e, tmp_path / "cache", None) for e in entries]
    summary = write_dataset(records, {}, [], Vocab(), tmp_path / "out")
    assert summary["n_rejected"] == 1
    assert summary["n_pieces"] == 0
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert manifest["status"].tolist() == ["rejected"]
    assert len(pd.read_parquet(tmp_path / "out" / "notes.parquet")) == 0
    assert len(pd.read_parquet(tmp_path / "out" / "tokens" / "train.parquet")) == 0


def test_files_beyond_a_limit_stay_in_the_manifest_as_rejected():
    from datasets.inventory import reject_beyond_limit

    entries = [
        {"path": f"{i}.mid", "status": "rejected" if i == 1 else "ok", "reason": ""}
        for i in range(5)
    ]
    reject_beyond_limit(entries, 2)
    assert [e["status"] for e in entries] == ["ok", "rejected", "ok", "rejected", "rejected"]
    assert "beyond --limit 2" in entries[4]["reason"]
