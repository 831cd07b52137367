"""The JSB chorales: reading Coconet's format, the serialization, and the benchmark run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.symbolic.jsb import (
    JSB_BOS,
    JSB_EOS,
    JSB_PITCH_OFFSET,
    JSB_REST,
    REST,
    fitting_transpositions,
    load_jsb,
    serialize_chorale,
    transpose_chorale,
    voice_ranges,
)
from flows.cli import run_cli
from flows.symbolic import SymbolicParams, symbolic_flow
from models.symbolic.data import read_pieces
from models.symbolic.evaluate import evaluate
from models.symbolic.jsb import (
    PUBLISHED,
    key_ensemble_nll,
    run_jsb_benchmark,
    score_jsb_model,
    write_jsb_tokens,
)
from models.symbolic.transformer import MusicTransformer

torch.set_num_threads(1)


def chorale(steps: int, shift: int = 0) -> list[list[int]]:
    """A small made-up chorale in Coconet's layout: steps of [S, A, T, B]."""
    chords = [[72, 67, 64, 48], [74, 65, 62, 50], [71, 67, 62, 55], [72, 64, 55, 48]]
    return [[p + shift for p in chords[(t // 4) % 4]] for t in range(steps)]


def write_jsb(path, n=(4, 2, 2), steps=32):
    splits = {
        split: [chorale(steps, shift=i) for i in range(count)]
        for split, count in zip(("train", "valid", "test"), n, strict=True)
    }
    path.write_text(json.dumps(splits))
    return path


def test_load_jsb_reads_splits_and_rests(tmp_path):
    data = json.loads(write_jsb(tmp_path / "jsb.json").read_text())
    data["train"][0][3] = [72, None, -1, float("nan")]  # the three ways copies mark a rest
    (tmp_path / "rests.json").write_text(json.dumps(data))
    loaded = load_jsb(tmp_path / "rests.json")
    assert {k: len(v) for k, v in loaded.items()} == {"train": 4, "valid": 2, "test": 2}
    assert loaded["train"][0].shape == (32, 4)
    assert loaded["train"][0][3].tolist() == [72, REST, REST, REST]
    assert loaded["valid"][1][0].tolist() == [73, 68, 65, 49]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not json", "cannot read"),
        ('{"train": []}', "expected a JSON object"),
        ('{"train": [[[60, 61, 62]]], "valid": [], "test": []}', r"train\[0\] step 0"),
        ('{"train": [[[60, 61, 62, 200]]], "valid": [], "test": []}', "outside MIDI range"),
        ('{"train": [[[60, 61, 62, 60.5]]], "valid": [], "test": []}', "whole MIDI number"),
        ('{"train": [[]], "valid": [], "test": []}', "non-empty"),
    ],
)
def test_load_jsb_names_the_file_and_the_reason(tmp_path, content, reason):
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=reason) as info:
        load_jsb(path)
    assert "broken.json" in str(info.value)


def test_serialization_is_satb_per_sixteenth():
    steps = np.array([[72, 67, 64, 48], [72, REST, 64, 48]])
    tokens, beats = serialize_chorale(steps)
    o = JSB_PITCH_OFFSET
    assert tokens.tolist() == [
        JSB_BOS, 72 + o, 67 + o, 64 + o, 48 + o, 72 + o, JSB_REST, 64 + o, 48 + o, JSB_EOS
    ]  # fmt: skip
    assert beats.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 2]


def test_tokens_files_keep_coconets_split(tmp_path):
    counts = write_jsb_tokens(write_jsb(tmp_path / "jsb.json"), tmp_path / "tokens")
    assert counts == {"train": 4, "valid": 2, "test": 2}
    valid = list(read_pieces(tmp_path / "tokens" / "valid.parquet"))
    assert [p.piece_id for p in valid] == ["valid/0000", "valid/0001"]
    assert len(valid[0].tokens) == 2 + 4 * 32
    assert valid[0].bar_steps == 16


def test_transpositions_keep_every_voice_in_its_range():
    ranges = np.array([[60, 76], [55, 70], [48, 64], [40, 60]])
    piece = np.array([[72, 67, 64, 48], [74, REST, 62, 50]])
    # Soprano may go up 2 (to 76) and down 12 but the window is -6..+5; tenor up 0 (64 is its
    # top), bass down 8, alto up 3: so only shifts -6..0 fit, 0 listed first.
    assert fitting_transpositions(piece, ranges) == [0, -6, -5, -4, -3, -2, -1]
    moved = transpose_chorale(piece, -2)
    assert moved.tolist() == [[70, 65, 62, 46], [72, REST, 60, 48]]
    assert voice_ranges([piece, moved]).tolist() == [[70, 74], [65, 67], [60, 64], [46, 50]]


def test_transposed_training_keeps_valid_and_test_as_given(tmp_path):
    jsb = write_jsb(tmp_path / "jsb.json")
    counts = write_jsb_tokens(jsb, tmp_path / "tokens", transpose=True)
    plain = write_jsb_tokens(jsb, tmp_path / "plain")
    assert counts["train"] > plain["train"]
    assert counts["valid"] == 2
    assert counts["test"] == 2
    for split in ("valid", "test"):
        name = f"{split}.parquet"
        assert (tmp_path / "tokens" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    train = list(read_pieces(tmp_path / "tokens" / "train.parquet"))
    assert {p.transpose for p in train} >= {0, -1, 1}
    assert len({(p.piece_id, p.transpose) for p in train}) == len(train)


def test_benchmark_run_reports_nll_beside_the_published_figures(tmp_path):
    result = run_jsb_benchmark(write_jsb(tmp_path / "jsb.json"), tmp_path / "out", "tiny", 0)
    saved = json.loads((tmp_path / "out" / "jsb_benchmark.json").read_text())
    assert saved["published_valid_nll"] == PUBLISHED
    assert 0 < saved["valid_nll"] < math.log(132)  # learned something from the uniform start
    assert set(saved["baselines_valid_nll"]) == {"ngram", "vanilla_transformer"}
    assert saved["pieces"] == {"train": 4, "valid": 2, "test": 2}
    assert result["valid_nll"] == saved["valid_nll"]


def test_a_saved_model_is_scored_on_jsb_without_training(prefect_harness, tmp_path, capsys):
    """`python -m flows.symbolic --jsb F --stages evaluate --model DIR`: the model is scored on
    JSB's valid and test splits as the benchmark scores it, nothing is trained, nothing else
    is read from the data directory, and the last line printed is one JSON object."""
    jsb = write_jsb(tmp_path / "jsb.json")
    trained = run_jsb_benchmark(jsb, tmp_path / "bench", "tiny", 0, vanilla=False)
    run_dir = Path(trained["run_dir"])
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    data_dir = tmp_path / "empty-data"
    argv = ["--jsb", str(jsb), "--stages", "evaluate", "--model", str(run_dir)]
    run_cli(symbolic_flow, SymbolicParams, [*argv, "--data-dir", str(data_dir)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["valid_nll"] == pytest.approx(trained["valid_nll"])
    assert printed["test_nll"] == pytest.approx(trained["test_nll"])
    assert printed["jsb"]["published_valid_nll"] == PUBLISHED
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
    assert not (data_dir / "symbolic").exists()
    assert not (data_dir / "models" / "music").exists()


def test_the_key_ensemble_of_one_key_is_the_model_itself(tmp_path):
    """Averaging over the shifts -0..0 is the single model's NLL to float precision; over
    -1..1 it is a proper mixture: never worse than the worst key's NLL plus log 3."""
    jsb = write_jsb(tmp_path / "jsb.json")
    trained = run_jsb_benchmark(jsb, tmp_path / "bench", "tiny", 0, vanilla=False)
    model = MusicTransformer.load(trained["run_dir"])
    valid = load_jsb(jsb)["valid"]
    single = evaluate(model, tmp_path / "bench" / "tokens" / "valid.parquet")["nll"]
    assert key_ensemble_nll(model, valid, 0) == pytest.approx(single, rel=1e-9)
    shifted = [
        key_ensemble_nll(model, [transpose_chorale(c, s) for c in valid], 0) for s in (-1, 0, 1)
    ]
    assert key_ensemble_nll(model, valid, 1) <= max(shifted) + math.log(3)
    scored = score_jsb_model(jsb, trained["run_dir"], tmp_path / "scored", key_ensemble=1)
    assert scored["valid_nll"] == pytest.approx(single)
    assert scored["valid_nll_key_ensemble"] == pytest.approx(key_ensemble_nll(model, valid, 1))
