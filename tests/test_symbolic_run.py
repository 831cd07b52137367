"""A whole music run on a tiny corpus: the model, both baselines, metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from symbolic_corpus import VOCAB, piece_notes, write_symbolic

from datasets.symbolic.midi import write_midi
from datasets.symbolic.tokenizer import VOCAB_FILE
from models.symbolic.config import profile_configs
from models.symbolic.musicality_study import (
    SOURCES,
    StudyConfig,
    main,
    midi_prompt_study,
    study_rows,
)
from models.symbolic.run import METRICS_JSON, MUSICALITY_PNG, evaluate_run, train_with_baseline
from models.symbolic.transformer import MusicTransformer

torch.set_num_threads(1)
FIELDS = {"nll", "ppl", "accuracy", "tokens", "by_transpose"}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path, dict]:
    symbolic = write_symbolic(tmp_path_factory.mktemp("run"))
    run_dir = symbolic.parent / "models" / "music" / "tiny"
    model_config, train_config = profile_configs("tiny", VOCAB.size, seed=0)
    result = train_with_baseline(run_dir, symbolic / "tokens", model_config, train_config)
    return run_dir, symbolic / "tokens", result


def test_the_baseline_is_the_same_size_without_the_additions(run):
    run_dir, _, result = run
    model = MusicTransformer.load(run_dir)
    vanilla = MusicTransformer.load(Path(result["vanilla"]["run_dir"]))
    assert vanilla.config.d_model == model.config.d_model
    assert vanilla.config.n_layer == model.config.n_layer
    assert (vanilla.config.relative, vanilla.config.mem_len, vanilla.config.beat_embedding) == (
        False,
        0,
        False,
    )
    assert result["vanilla"]["tokens_trained"] == result["tokens_trained"]


def test_metrics_hold_the_model_and_both_baselines(run):
    run_dir, tokens_dir, result = run
    metrics = evaluate_run(run_dir, tokens_dir)
    saved = json.loads((run_dir / METRICS_JSON).read_text())
    assert saved == json.loads(json.dumps(metrics))
    for split in ("valid", "test"):
        assert {f"{split}_{f}" for f in FIELDS} <= set(saved)
    assert set(saved["test_by_transpose"]) == {"0", "2"}
    assert set(saved["baselines"]) == {"ngram", "vanilla_transformer"}
    assert saved["steps_trained"] == saved["baselines"]["vanilla_transformer"]["steps_trained"]
    assert saved["steps_trained"] == result["steps"]
    for scores in saved["baselines"].values():
        assert {f"test_{f}" for f in FIELDS} <= set(scores)
        assert scores["test_tokens"] == saved["test_tokens"]  # the same targets for all
    # The n-gram saw at most the Transformers' token budget.
    assert saved["ngram_tokens_trained"] <= saved["token_budget"] + 200
    assert saved["token_budget"] == result["tokens_trained"]
    before = (run_dir / METRICS_JSON).read_bytes()
    evaluate_run(run_dir, tokens_dir)
    assert (run_dir / METRICS_JSON).read_bytes() == before  # same inputs, same bytes


SHORT_STUDY = StudyConfig(n_prompts=2, prompt_bars=2, continuation_bars=3)


def test_the_musicality_study_holds_every_source_against_the_real_continuation(run):
    """Held-out test prompts continued by the model, its vanilla baseline and the n-gram, each
    for the same bars as the real continuation; deterministic; in metrics.json with a plot."""
    run_dir, tokens_dir, _ = run
    metrics = evaluate_run(run_dir, tokens_dir, vocab=VOCAB, study=SHORT_STUDY)
    study = json.loads((run_dir / METRICS_JSON).read_text())["musicality"]
    assert study == json.loads(json.dumps(metrics["musicality"]))
    assert study["n_prompts"] == 2  # the two test pieces (untransposed), 6 bars each
    assert set(study["sources"]) == set(SOURCES)
    assert {row["piece_id"] for row in study["per_prompt"]} == {"piece008", "piece009"}
    real = study["sources"]["real"]
    # The real continuation is the piece going on: the prompt's key (but for a chromatic
    # passing note), the prompt's texture exactly (the test pieces repeat their progression).
    assert real["in_prompt_key"] >= 0.9
    assert real["density_ratio"] == pytest.approx(1.0)
    assert (run_dir / MUSICALITY_PNG).read_bytes()[:4] == b"\x89PNG"
    again = evaluate_run(run_dir, tokens_dir, vocab=VOCAB, study=SHORT_STUDY)
    assert again["musicality"] == metrics["musicality"]
    assert study_rows(study)[0]["source"] == "prompt"


def test_the_study_is_empty_when_no_test_piece_is_long_enough(run):
    run_dir, tokens_dir, _ = run
    long_study = StudyConfig(prompt_bars=4, continuation_bars=8)  # 12 bars; pieces have 6
    metrics = evaluate_run(run_dir, tokens_dir, vocab=VOCAB, study=long_study)
    assert metrics["musicality"]["n_prompts"] == 0
    assert metrics["musicality"]["sources"] == {}


def test_the_study_of_users_midi_files_lists_what_it_cannot_use(run, tmp_path, capsys):
    """A model directory on MIDI files from elsewhere: the model beside each file's own next
    bars; a corrupt file and one too short are rejected by name, the rest still measured."""
    run_dir, _, _ = run
    (run_dir / VOCAB_FILE).write_text(VOCAB.to_json())
    for index in range(2):
        onset, duration, pitch = piece_notes(index)
        notes = pd.DataFrame({"onset": onset / 4, "duration": duration / 4, "pitch": pitch})
        write_midi(notes, tmp_path / f"song{index}.mid")
    onset, duration, pitch = piece_notes(0, repeats=1)  # 2 bars: shorter than prompt + 1
    short = pd.DataFrame({"onset": onset / 4, "duration": duration / 4, "pitch": pitch})
    write_midi(short, tmp_path / "short.mid")
    (tmp_path / "broken.mid").write_bytes(b"MThd\x00\x00")
    study = midi_prompt_study(run_dir, sorted(tmp_path.glob("*.mid")), SHORT_STUDY)
    assert study["n_prompts"] == 2
    assert {row["piece_id"] for row in study["per_prompt"]} == {"song0", "song1"}
    assert set(study["sources"]) == {"real", "music_transformer"}
    assert study["sources"]["real"]["in_prompt_key"] >= 0.9
    reasons = {Path(row["file"]).name: row["reason"] for row in study["rejected"]}
    assert set(reasons) == {"broken.mid", "short.mid"}
    assert "broken.mid" in reasons["broken.mid"]
    assert "truncated" in reasons["broken.mid"]
    assert reasons["short.mid"] == "shorter than 3 bars"
    assert midi_prompt_study(run_dir, sorted(tmp_path.glob("*.mid")), SHORT_STUDY) == study
    main(["--model", str(run_dir), str(tmp_path), "--prompt-bars", "2", "--continuation-bars", "3"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["sources"] == study["sources"]


def test_a_run_can_be_scored_in_its_original_keys_only(run):
    run_dir, tokens_dir, _ = run
    metrics = evaluate_run(run_dir, tokens_dir, original_keys=True)
    assert set(metrics["test_by_transpose"]) == {"0"}
    assert metrics["original_keys"] is True
    for scores in metrics["baselines"].values():
        assert set(scores["test_by_transpose"]) == {"0"}
        assert scores["test_tokens"] == metrics["test_tokens"]
