"""Generation: sampling filters, the grammar, prompts, and outputs that always decode."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from symbolic_corpus import VOCAB, write_symbolic

from datasets.symbolic.midi import read_midi, write_midi
from datasets.symbolic.tokenizer import decode
from models.symbolic.config import MusicConfig
from models.symbolic.data import read_pieces
from models.symbolic.generate import (
    filter_logits,
    load_prompt,
    ngram_feeder,
    pachelbel_notes,
    sample_continuation,
    transformer_feeder,
    write_outputs,
)
from models.symbolic.ngram import NGram
from models.symbolic.transformer import MusicTransformer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def symbolic(tmp_path_factory) -> Path:
    return write_symbolic(tmp_path_factory.mktemp("gen"))


def untrained_model(seed: int = 0) -> MusicTransformer:
    config = MusicConfig.preset("tiny", VOCAB.size)
    return MusicTransformer(config, torch.Generator().manual_seed(seed)).eval()


def test_filters_keep_only_allowed_top_k_and_nucleus():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    allowed = torch.tensor([True, True, True, True, False])
    probs = filter_logits(logits, allowed, 1.0, 0, 1.0)
    assert probs[4] == 0
    assert probs.sum() == pytest.approx(1.0)
    top2 = filter_logits(logits, allowed, 1.0, 2, 1.0)
    assert (top2 > 0).tolist() == [False, False, True, True, False]
    # Nucleus 0.5: token 3 alone has 0.64 of the mass among the allowed.
    nucleus = filter_logits(logits, allowed, 1.0, 0, 0.5)
    assert (nucleus > 0).tolist() == [False, False, False, True, False]
    cold = filter_logits(logits, allowed, 0.1, 0, 1.0)
    assert cold[3] > 0.99
    with pytest.raises(ValueError, match="temperature"):
        filter_logits(logits, allowed, 0.0, 0, 1.0)


def check_valid(tokens: np.ndarray, beats: np.ndarray, tmp_path: Path, name: str) -> None:
    """The sequence follows the grammar and decodes to a MIDI file that reads back."""
    assert tokens[0] == VOCAB.bos
    assert tokens[-1] == VOCAB.eos
    kinds = [VOCAB.kind_of(int(t)) for t in tokens[1:-1]]
    for previous, current in itertools.pairwise(kinds):
        assert (previous == "pitch") == (current == "duration")  # each pitch has a duration
    assert kinds[-1] != "pitch"
    assert (np.diff(beats) >= 0).all()  # time only moves forward
    onset, duration, pitch = decode(tokens, VOCAB)
    assert len(onset) == sum(k == "pitch" for k in kinds)
    assert (duration >= 1).all()
    frame = {"onset": onset / 4, "duration": duration / 4, "pitch": pitch}
    path = write_midi(pd.DataFrame(frame), tmp_path / f"{name}.mid")
    back = read_midi(path)
    assert len(back) == len(onset)
    np.testing.assert_allclose(np.sort(back["onset"].to_numpy()), np.sort(onset / 4))


@pytest.mark.parametrize("seed", range(4))
def test_every_sample_decodes_to_a_valid_midi_file(tmp_path, symbolic, seed):
    # An untrained model puts mass everywhere: only the grammar keeps its output valid.
    model = untrained_model(seed)
    prompt = load_prompt("piece000", VOCAB, 1, symbolic / "tokens")
    generator = torch.Generator().manual_seed(seed)
    tokens, beats = sample_continuation(
        transformer_feeder(model, prompt.bar_steps),
        VOCAB,
        prompt,
        60 + seed,
        temperature=1.5,
        generator=generator,
    )
    assert np.array_equal(tokens[: len(prompt.tokens)], prompt.tokens)
    new = len(tokens) - len(prompt.tokens) - 1  # without the closing eos
    assert new in (60 + seed, 61 + seed)  # one more when a cut-off pitch needed its duration
    check_valid(tokens, beats, tmp_path, f"s{seed}")


def test_same_seed_same_music():
    model = untrained_model()
    prompt = load_prompt("pachelbel", VOCAB, 2, None)

    def sample(seed):
        generator = torch.Generator().manual_seed(seed)
        return sample_continuation(
            transformer_feeder(model, prompt.bar_steps), VOCAB, prompt, 40, 1.0, 10, 0.9, generator
        )[0]

    assert np.array_equal(sample(3), sample(3))
    assert not np.array_equal(sample(3), sample(4))


def test_prompts_from_pachelbel_a_midi_file_and_a_piece_id(tmp_path, symbolic):
    pachelbel = load_prompt("pachelbel", VOCAB, 2, None)
    assert pachelbel.bar_steps == 16
    onset, _, pitch = decode(pachelbel.tokens, VOCAB)
    assert onset.max() < 2 * 16
    assert 50 in pitch
    assert 78 in pitch
    four = load_prompt("pachelbel", VOCAB, 4, None)
    assert len(decode(four.tokens, VOCAB)[0]) == len(pachelbel_notes())

    midi = write_midi(pachelbel_notes(), tmp_path / "canon.mid")
    from_file = load_prompt(str(midi), VOCAB, 2, None)
    assert np.array_equal(from_file.tokens, pachelbel.tokens)

    piece = load_prompt("piece001", VOCAB, 1, symbolic / "tokens")
    assert piece.tokens[0] == VOCAB.bos
    assert VOCAB.eos not in piece.tokens
    assert piece.beats.max() < 16
    with pytest.raises(ValueError, match="no such piece"):
        load_prompt("nothing", VOCAB, 1, symbolic / "tokens")


def test_outputs_are_written(tmp_path):
    model = untrained_model()
    prompt = load_prompt("pachelbel", VOCAB, 2, None)
    tokens, _ = sample_continuation(
        transformer_feeder(model, prompt.bar_steps), VOCAB, prompt, 30, generator=torch.Generator()
    )
    out = write_outputs(tokens, VOCAB, prompt, tmp_path / "reports" / "canon")
    assert out["prompt_notes"] == 12
    assert len(read_midi(out["midi"])) == out["notes"]
    assert Path(out["png"]).read_bytes()[:4] == b"\x89PNG"


def test_a_continuation_of_the_prompt_itself_matches_its_musicality(tmp_path):
    """The prompt written twice (the second copy as the 'continuation'): same key, same
    density, same figures; measured on the notes after the prompt's bars only."""
    prompt = load_prompt("pachelbel", VOCAB, 2, None)
    shift = VOCAB.shift_token(prompt.bar_steps * 2 - int(prompt.beats[-1]))
    tokens = np.concatenate([prompt.tokens, [shift], prompt.tokens[1:], [2]])
    out = write_outputs(tokens, VOCAB, prompt, tmp_path / "canon")["musicality"]
    assert out["in_prompt_key"] == 1.0
    assert out["density_ratio"] == pytest.approx(1.0)
    assert out["pitch_class_entropy"] == pytest.approx(out["prompt_pitch_class_entropy"])


def test_sampling_stops_once_time_reaches_until_step(tmp_path):
    model = untrained_model()
    prompt = load_prompt("pachelbel", VOCAB, 2, None)
    until = 2 * 16 + 16  # one bar after the prompt
    tokens, beats = sample_continuation(
        transformer_feeder(model, prompt.bar_steps),
        VOCAB,
        prompt,
        10_000,
        generator=torch.Generator().manual_seed(0),
        until_step=until,
    )
    # Every token but the last sampled one (the shift that reached the bar) and eos stands
    # before the bar; a stopped sequence still decodes.
    assert (beats[:-2] < until).all()
    assert beats[-2] >= until
    check_valid(tokens, beats, tmp_path, "until")


def test_the_vanilla_model_and_the_ngram_continue_past_the_vanilla_positions(tmp_path, symbolic):
    """The vanilla baseline knows `seg_len` positions; it reads a sliding window, so it and the
    n-gram (through the same loop) continue as far as asked."""
    vanilla = MusicTransformer(MusicConfig.preset("tiny", VOCAB.size).vanilla())
    ngram = NGram(VOCAB.size).fit(
        p.tokens for p in read_pieces(symbolic / "tokens" / "train.parquet")
    )
    prompt = load_prompt("pachelbel", VOCAB, 2, None)
    for name, feed in [
        ("vanilla", transformer_feeder(vanilla, prompt.bar_steps)),
        ("ngram", ngram_feeder(ngram)),
    ]:
        generator = torch.Generator().manual_seed(1)
        tokens, beats = sample_continuation(feed, VOCAB, prompt, 80, generator=generator)
        assert len(tokens) >= len(prompt.tokens) + 80 > vanilla.config.seg_len
        check_valid(tokens, beats, tmp_path, name)


def test_a_midi_prompt_leaves_drums_out_and_keeps_its_meter_and_tempo(tmp_path):
    """A user's MIDI file with a drum track, in 3/4 at 72 bpm: the prompt holds the pitched
    notes only, bars of 3 beats, and the continuation is written at the file's tempo."""
    melody = pd.DataFrame(
        {
            "onset": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            "duration": 1.0,
            "pitch": [67, 69, 71, 72, 74, 76],
        }
    )
    drums = pd.DataFrame({"onset": [0.0, 1.5, 3.0], "duration": 0.25, "pitch": [36, 38, 42]})
    notes = pd.concat(
        [melody.assign(track=0, is_drum=False), drums.assign(track=1, is_drum=True)]
    ).assign(program=0)
    midi = write_midi(notes.assign(ts_num=3, ts_den=4), tmp_path / "waltz.mid", tempo_bpm=72.0)
    prompt = load_prompt(str(midi), VOCAB, 2, None)
    assert prompt.bar_steps == 3 * VOCAB.steps_per_beat
    assert prompt.tempo_bpm == pytest.approx(72.0)
    assert sorted(decode(prompt.tokens, VOCAB)[2]) == [67, 69, 71, 72, 74, 76]
    tokens, _ = sample_continuation(
        transformer_feeder(untrained_model(), prompt.bar_steps), VOCAB, prompt, 20
    )
    out = write_outputs(tokens, VOCAB, prompt, tmp_path / "waltz-continued")
    assert read_midi(out["midi"])["tempo"].iloc[0] == pytest.approx(72.0)
    drum_only = write_midi(drums.assign(track=0, is_drum=True), tmp_path / "drums.mid")
    with pytest.raises(ValueError, match="only drum notes"):
        load_prompt(str(drum_only), VOCAB, 2, None)
