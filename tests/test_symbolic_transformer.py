"""The music Transformer's exact properties: masks, segment memory, the generation cache."""

from __future__ import annotations

import pytest
import torch

from models.checkpoint import load_config, load_weights, save_model
from models.symbolic.config import MusicConfig
from models.symbolic.transformer import MusicTransformer, attention_mask

torch.set_num_threads(1)
VOCAB = 40


def make_model(seed: int = 0, **overrides) -> MusicTransformer:
    torch.manual_seed(seed)  # tests only: library code seeds through a torch.Generator
    config = MusicConfig.preset("tiny", VOCAB, **overrides)
    model = MusicTransformer(config).eval()
    # Non-zero u/v biases, so the relative terms are actually exercised.
    for block in model.blocks:
        if config.relative:
            torch.nn.init.normal_(block.attn.u, std=0.5)
            torch.nn.init.normal_(block.attn.v, std=0.5)
    return model


def batch(length: int, seed: int = 1, b: int = 2):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, VOCAB, (b, length), generator=g)
    beats = torch.arange(length).repeat(b, 1) // 2
    bar_steps = torch.full((b, length), 16)
    return tokens, beats, bar_steps


def test_causal_mask_and_window_mask():
    m = attention_mask(4, 6, 0, torch.device("cpu"))
    # Query i stands at key position 2 + i: it sees keys 0..2+i and nothing later.
    for i in range(4):
        assert m[i].tolist() == [j <= 2 + i for j in range(6)]
    w = attention_mask(4, 6, 3, torch.device("cpu"))
    for i in range(4):
        assert w[i].tolist() == [2 + i - 3 < j <= 2 + i for j in range(6)]


@pytest.mark.parametrize("window", [0, 3])
@pytest.mark.parametrize("relative", [True, False])
def test_no_token_sees_the_future(window, relative):
    overrides = {} if relative else {"relative": False, "mem_len": 0}
    model = make_model(window=window, **overrides)
    tokens, beats, bars = batch(16)
    logits, _ = model(tokens, beats, bars)
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 5) % VOCAB
    logits2, _ = model(changed, beats, bars)
    torch.testing.assert_close(logits[:, :10], logits2[:, :10])
    assert not torch.allclose(logits[:, 10:], logits2[:, 10:])
    if window:
        # With window w each layer looks back w - 1 positions, so through L layers a change
        # at position 2 reaches exactly positions 2 .. 2 + L (w - 1).
        reach = 2 + model.config.n_layer * (window - 1)
        changed = tokens.clone()
        changed[:, 2] = (changed[:, 2] + 7) % VOCAB
        logits3, _ = model(changed, beats, bars)
        torch.testing.assert_close(logits[:, reach + 1 :], logits3[:, reach + 1 :])
        assert not torch.allclose(logits[:, reach], logits3[:, reach])


@pytest.mark.parametrize("window", [0, 5])
def test_memory_equals_one_pass_over_both_segments(window):
    model = make_model(window=window)
    tokens, beats, bars = batch(32)
    full, _ = model(tokens, beats, bars)
    first, mems = model(tokens[:, :16], beats[:, :16], bars[:, :16])
    second, _ = model(tokens[:, 16:], beats[:, 16:], bars[:, 16:], mems)
    torch.testing.assert_close(first, full[:, :16], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second, full[:, 16:], atol=1e-5, rtol=1e-5)


def test_memory_carries_no_gradient():
    model = make_model().train()
    tokens, beats, bars = batch(32)
    _, mems = model(tokens[:, :16], beats[:, :16], bars[:, :16])
    assert all(not m.requires_grad for m in mems)
    logits, _ = model(tokens[:, 16:], beats[:, 16:], bars[:, 16:], mems)
    logits.sum().backward()  # would fail if the graph of the first segment were kept


@pytest.mark.parametrize("relative", [True, False])
def test_cached_steps_equal_a_full_pass(relative):
    overrides = {} if relative else {"relative": False, "mem_len": 0}
    model = make_model(**overrides)
    length = model.config.span if relative else model.config.seg_len
    tokens, beats, bars = batch(length)
    full, _ = model(tokens, beats, bars)
    cache = model.new_cache()
    prefix = model.step(tokens[:, :5], beats[:, :5], bars[:, :5], cache)
    steps = [prefix] + [
        model.step(tokens[:, t : t + 1], beats[:, t : t + 1], bars[:, t : t + 1], cache)
        for t in range(5, length)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_beat_embedding_is_used():
    model = make_model()
    tokens, beats, bars = batch(16)
    a, _ = model(tokens, beats, bars)
    b, _ = model(tokens, beats + 1, bars)
    assert not torch.allclose(a, b)
    vanilla = make_model(relative=False, mem_len=0, beat_embedding=False)
    a, _ = vanilla(tokens, beats, bars)
    b, _ = vanilla(tokens, beats + 1, bars)
    torch.testing.assert_close(a, b)


def test_save_load_gives_identical_logits(tmp_path):
    model = make_model(seed=3)
    save_model(tmp_path, model, model.config)
    loaded = load_weights(tmp_path, MusicTransformer(load_config(tmp_path, MusicConfig))).eval()
    tokens, beats, bars = batch(16)
    assert torch.equal(model(tokens, beats, bars)[0], loaded(tokens, beats, bars)[0])


def test_vanilla_refuses_positions_beyond_its_length():
    model = make_model(relative=False, mem_len=0)
    tokens, beats, bars = batch(model.config.seg_len + 1)
    with pytest.raises(ValueError, match="at most"):
        model(tokens, beats, bars)


def test_presets():
    assert MusicConfig.preset("full", 300).d_model > MusicConfig.preset("quick", 300).d_model
    assert MusicConfig.preset("large", 300).d_model > MusicConfig.preset("full", 300).d_model
    with pytest.raises(ValueError, match="unknown model preset"):
        MusicConfig.preset("huge", 300)
