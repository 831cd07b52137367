"""Corpora: discovery, the inventory, every reader on real files, the bundled chorales, JSB."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import music21
import numpy as np
import pandas as pd
import pytest

from datasets.inventory import inventory
from datasets.io import RejectedInput
from datasets.symbolic.corpus import (
    bach_chorale_names,
    corpus_files,
    discover_files,
    export_bach_midi,
    jsb_note_tables,
    music21_corpus_files,
    read_piece,
    read_pieces,
    voice_notes,
)
from datasets.symbolic.midi import read_midi, write_midi
from datasets.symbolic.tokenizer import Vocab, decode, encode, quantize

MUSIC21_CORPUS = Path(music21.__file__).parent / "corpus"
VOCAB = Vocab()
SAMPLE = 20


@pytest.fixture(scope="module")
def chorale_sample(tmp_path_factory) -> list[Path]:
    return export_bach_midi(tmp_path_factory.mktemp("bach"), limit=SAMPLE)


def _assert_round_trips(notes, tmp_path: Path) -> None:
    """tokens -> notes equals the quantized notes; notes -> MIDI -> notes -> same tokens."""
    pitched = notes[~notes["is_drum"]]
    q = quantize(pitched["onset"], pitched["duration"], pitched["pitch"], 4, VOCAB.max_duration)
    tokens, _beats = encode(q.onset, q.duration, q.pitch, VOCAB)
    for got, want in zip(decode(tokens, VOCAB), q[:3], strict=True):
        np.testing.assert_array_equal(got, want)
    table = pd.DataFrame({"onset": q.onset / 4, "duration": q.duration / 4, "pitch": q.pitch})
    back = read_midi(write_midi(table, tmp_path / "round.mid"))
    q2 = quantize(back["onset"], back["duration"], back["pitch"], 4, VOCAB.max_duration)
    np.testing.assert_array_equal(encode(q2.onset, q2.duration, q2.pitch, VOCAB)[0], tokens)


def test_chorale_export_is_cached_and_deterministic(chorale_sample, tmp_path):
    assert [p.name for p in chorale_sample[:2]] == ["bwv269.mid", "bwv347.mid"]
    assert len(chorale_sample) == SAMPLE
    assert len(bach_chorale_names()) == 350
    stamp = chorale_sample[0].stat().st_mtime_ns
    again = export_bach_midi(chorale_sample[0].parent, limit=SAMPLE)
    assert again == chorale_sample
    assert chorale_sample[0].stat().st_mtime_ns == stamp
    fresh = export_bach_midi(tmp_path, limit=2)
    assert [p.read_bytes() for p in fresh] == [p.read_bytes() for p in chorale_sample[:2]]


def test_chorale_sample_parses_and_round_trips(chorale_sample, tmp_path):
    for path in chorale_sample:
        notes = read_piece(path)
        assert notes["track"].nunique() >= 4, path.name  # S A T B, sometimes instruments
        _assert_round_trips(notes, tmp_path)


def test_midi_export_matches_the_score(chorale_sample):
    """The exported MIDI holds the same notes music21 reads from the MusicXML original."""
    path = chorale_sample[0]
    from_xml = read_piece(MUSIC21_CORPUS / "bach" / "bwv269.mxl")
    from_midi = read_piece(path)
    cols = ["onset", "duration", "pitch", "track"]
    assert from_midi[cols].equals(from_xml[cols])


@pytest.mark.slow
def test_all_bundled_chorales_export_parse_and_round_trip(tmp_path):
    paths = export_bach_midi(tmp_path / "bach")
    assert len(paths) == len(set(paths)) == 350
    for path in paths:
        _assert_round_trips(read_piece(path), tmp_path)


@pytest.mark.parametrize(
    "relative",
    ["chopin/mazurka06-2.krn", "schubert/Lindenbaum.xml", "bach/bwv277.mxl"],
)
def test_score_formats_parse_and_round_trip(relative, tmp_path):
    notes = read_piece(MUSIC21_CORPUS / relative)
    assert len(notes) > 50
    _assert_round_trips(notes, tmp_path)


def test_bwv277_repeats_are_played_out():
    notes = read_piece(MUSIC21_CORPUS / "bach" / "bwv277.mxl")
    score = music21.corpus.parse("bach/bwv277")
    assert notes["onset"].max() > score.highestTime - 4


def test_abc_tune_parses(tmp_path):
    path = tmp_path / "tune.abc"
    path.write_text("X:1\nT:Scale\nM:4/4\nL:1/4\nK:C\nCDEF|G2G2|]\n")
    notes = read_piece(path)
    assert notes["pitch"].tolist() == [60, 62, 64, 65, 67, 67]
    assert notes["onset"].tolist() == [0, 1, 2, 3, 4, 6]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.xml", b"", "empty file"),
        ("broken.xml", b"<score-partwise><part id='P1'><measure>", "music21 cannot read it"),
        ("words.krn", b"this is a shopping list\n", "music21 cannot read it"),
        ("rests.abc", b"X:1\nT:Rests\nM:4/4\nL:1/4\nK:C\nzzzz|]\n", "no notes"),
        ("notes.mid", b"not a midi file at all", "not a MIDI file"),
    ],
)
def test_unreadable_scores_are_rejected_with_reasons(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(RejectedInput, match=reason):
        read_piece(path)


def test_an_opus_is_one_piece_per_score():
    """An abc file of many folk tunes: each tune a piece of its own, named by its number; the
    single-table reader still refuses it rather than merge the tunes."""
    book = MUSIC21_CORPUS / "airdsAirs" / "book4.abc"
    pieces = read_pieces(book)
    names = [name for name, _ in pieces]
    assert len(pieces) > 10
    assert len(set(names)) == len(names)
    assert all(name for name in names)
    assert all(len(notes) > 0 for _, notes in pieces)
    with pytest.raises(RejectedInput, match="opus"):
        read_piece(book)


def test_a_single_score_is_one_unnamed_piece(chorale_sample):
    ((name, notes),) = read_pieces(chorale_sample[0])
    assert name == ""
    assert notes.equals(read_piece(chorale_sample[0]))


def test_the_music21_corpus_spans_composers_and_formats():
    root, every = music21_corpus_files()
    assert len(every) > 2500
    assert {p.suffix for p in every} >= {".krn", ".abc", ".mxl"}
    root, some = music21_corpus_files(limit=24)
    assert len(some) == 24
    assert len({p.relative_to(root).parts[0] for p in some}) >= 4  # Bach, Palestrina, folk, ...
    assert {p.suffix for p in some} >= {".krn", ".abc", ".mxl"}


def test_max_notes_rejects_big_files(chorale_sample):
    with pytest.raises(RejectedInput, match="max_notes=10"):
        read_piece(chorale_sample[0], max_notes=10)


def test_discovery_is_recursive_sorted_and_skips_other_files(tmp_path):
    for name in ["b/x.MID", "a.mid", "c/d/e.musicxml", "notes.txt", ".hidden/z.mid", "f.krn"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in discover_files(tmp_path)]
    assert found == ["a.mid", "b/x.MID", "c/d/e.musicxml", "f.krn"]
    # A directory is listed whole: files beyond a limit are rejected later, in the manifest.
    root, files = corpus_files(str(tmp_path), tmp_path / "data", limit=2)
    assert root == tmp_path
    assert [f.name for f in files] == ["a.mid", "x.MID", "e.musicxml", "f.krn"]
    with pytest.raises(ValueError, match="neither"):
        corpus_files(str(tmp_path / "missing"), tmp_path)


def test_inventory_marks_duplicates_empty_and_oversized_files(tmp_path, chorale_sample):
    shutil.copy(chorale_sample[0], tmp_path / "a.mid")
    shutil.copy(chorale_sample[0], tmp_path / "b.mid")
    (tmp_path / "big.mid").write_bytes(chorale_sample[0].read_bytes() + b"\0")
    (tmp_path / "empty.mid").write_bytes(b"")
    limit = chorale_sample[0].stat().st_size
    entries = inventory(discover_files(tmp_path), tmp_path, max_file_bytes=limit)
    status = {e["path"]: (e["status"], e["reason"]) for e in entries}
    assert status["a.mid"] == ("ok", "")
    assert status["b.mid"] == ("duplicate", "same content as a.mid")
    assert status["empty.mid"][0] == "rejected"
    assert "empty" in status["empty.mid"][1]
    assert status["big.mid"][0] == "rejected"
    assert "max_file_bytes" in status["big.mid"][1]


def test_voice_notes_merges_held_steps_and_skips_rests():
    onset, duration, pitch = voice_notes(np.array([60, 60, -1, -1, 62, 64, 64, 64]))
    assert (onset.tolist(), duration.tolist(), pitch.tolist()) == (
        [0, 4, 5],
        [2, 1, 3],
        [60, 62, 64],
    )


def test_jsb_file_becomes_pieces_with_their_own_split(tmp_path):
    chorale = [[72, 67, 64, 48]] * 4 + [[74, 67, -1, 43]] * 4
    data = {"train": [chorale, chorale[:4]], "valid": [chorale], "test": [chorale]}
    path = tmp_path / "jsb.json"
    path.write_text(json.dumps(data))
    pieces = jsb_note_tables(path)
    assert [(piece, split) for piece, split, _ in pieces] == [
        ("train/0000", "train"),
        ("train/0001", "train"),
        ("valid/0000", "valid"),
        ("test/0000", "test"),
    ]
    notes = pieces[0][2]
    assert notes["pitch"].tolist() == [48, 64, 67, 72, 43, 74]
    assert notes["duration"].tolist() == [1.0, 1.0, 2.0, 1.0, 1.0, 1.0]
    assert notes["track"].tolist() == [3, 2, 1, 0, 3, 0]


def test_bad_jsb_file_is_rejected(tmp_path):
    path = tmp_path / "jsb.json"
    path.write_text(json.dumps({"train": [[[60, 61]]], "valid": [], "test": []}))
    with pytest.raises(RejectedInput, match="expected 4 voices"):
        jsb_note_tables(path)


def test_mxl_zip_bombs_and_non_zips_are_rejected_before_music21(tmp_path):
    import zipfile

    from datasets.io import RejectedInput
    from datasets.symbolic.scores import check_mxl

    bomb = tmp_path / "bomb.mxl"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("score.xml", b"\0" * 2_000_000)
    with pytest.raises(RejectedInput, match="inflates to 2000000 bytes"):
        check_mxl(bomb, max_uncompressed_bytes=1_000_000)
    not_zip = tmp_path / "text.mxl"
    not_zip.write_text("<score-partwise/>")
    with pytest.raises(RejectedInput, match=r"not a valid \.mxl"):
        check_mxl(not_zip)
