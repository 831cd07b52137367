"""Checkpoints: safetensors + JSON round trips, and training state for resume."""

from __future__ import annotations

import dataclasses

import torch

from models import checkpoint


@dataclasses.dataclass
class TinyConfig:
    width: int = 4
    depth: int = 2


def _model(config: TinyConfig) -> torch.nn.Module:
    layers = [torch.nn.Linear(config.width, config.width) for _ in range(config.depth)]
    return torch.nn.Sequential(*layers)


def test_save_load_model_gives_identical_outputs(tmp_path):
    config = TinyConfig(width=6, depth=3)
    model = _model(config)
    checkpoint.save_model(tmp_path, model, config)
    loaded_config = checkpoint.load_config(tmp_path, TinyConfig)
    assert loaded_config == config
    clone = checkpoint.load_weights(tmp_path, _model(loaded_config))
    x = torch.randn(5, 6)
    assert torch.equal(model(x), clone(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_train_state_resumes_optimizer_and_generator(tmp_path):
    config = TinyConfig()
    model = _model(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(7)
    for _ in range(3):
        loss = model(torch.randn(2, 4, generator=generator)).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint.save_train_state(tmp_path, optimizer, {"step": 3}, generator)
    expected_next = torch.randn(3, generator=generator)

    fresh_optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    fresh_generator = torch.Generator()
    extra = checkpoint.load_train_state(tmp_path, fresh_optimizer, fresh_generator)
    assert extra == {"step": 3}
    assert torch.equal(torch.randn(3, generator=fresh_generator), expected_next)
    original = optimizer.state_dict()["state"]
    restored = fresh_optimizer.state_dict()["state"]
    for param_id, slots in original.items():
        for slot, value in slots.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(restored[param_id][slot]))


def test_load_train_state_without_checkpoint_returns_none(tmp_path):
    optimizer = torch.optim.SGD(_model(TinyConfig()).parameters(), lr=0.1)
    assert checkpoint.load_train_state(tmp_path, optimizer) is None
