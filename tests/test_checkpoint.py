"""Checkpoints: safetensors + JSON round trips, and training state for resume."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from models import checkpoint
from models.audio.config import preset
from models.audio.infer import load_model
from models.audio.unet import AudioUNet
from models.symbolic.config import MusicConfig
from models.symbolic.transformer import MusicTransformer


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


class Killed(Exception):
    """Stands in for a SIGKILL inside a commit."""


def _commit(directory: Path, step: int) -> None:
    """A checkpoint of two files that must agree: both name the same step."""

    def write(pending: Path) -> None:
        (pending / "a.json").write_text(json.dumps(step))
        (pending / "b.json").write_text(json.dumps(step))

    checkpoint.commit_checkpoint(directory, write)


def _steps(directory: Path) -> list[int]:
    return [json.loads((directory / name).read_text()) for name in ("a.json", "b.json")]


def test_a_commit_killed_before_its_record_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    _commit(tmp_path, 1)
    real_write = checkpoint.write_json_atomic

    def die_at_the_record(path, value):
        if Path(path).name == checkpoint.COMMIT_FILE:
            raise Killed
        return real_write(path, value)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "write_json_atomic", die_at_the_record)
        with pytest.raises(Killed):
            _commit(tmp_path, 2)
    checkpoint.finish_checkpoint(tmp_path)
    assert _steps(tmp_path) == [1, 1]
    assert not (tmp_path / checkpoint.PENDING_DIR).exists()


def test_a_commit_killed_while_moving_in_is_rolled_forward(tmp_path, monkeypatch):
    _commit(tmp_path, 1)
    real_replace = os.replace

    def move_one_then_die(src, dst):
        real_replace(src, dst)
        if Path(src).name == "a.json":  # a file moved in (atomic writes replace temp files)
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint.os, "replace", move_one_then_die)
        with pytest.raises(Killed):
            _commit(tmp_path, 2)
    assert sorted(_steps(tmp_path)) == [1, 2]  # a mix, never resumed from:
    checkpoint.finish_checkpoint(tmp_path)
    assert _steps(tmp_path) == [2, 2]
    assert not (tmp_path / checkpoint.PENDING_DIR).exists()


# --- A broken or foreign model directory: a clear error naming the file and the reason ---


def _music_run(directory: Path) -> Path:
    config = MusicConfig.preset("tiny", vocab_size=40)
    checkpoint.save_model(directory, MusicTransformer(config), config)
    return directory


def _audio_run(directory: Path) -> Path:
    config = preset("tiny")
    checkpoint.save_model(directory, AudioUNet(config), config)
    return directory


LOADERS = {"music": (_music_run, MusicTransformer.load), "audio": (_audio_run, load_model)}


def _weights_of_another_size(run: Path, domain: str) -> None:
    """config.json of one model beside the weights of a bigger one of the same kind."""
    if domain == "music":
        bigger = MusicConfig.preset("quick", vocab_size=40)
        torch_model = MusicTransformer(bigger)
    else:
        bigger = preset("quick")
        torch_model = AudioUNet(bigger)
    config = json.loads((run / checkpoint.CONFIG_FILE).read_text())
    checkpoint.save_model(run, torch_model, bigger)
    (run / checkpoint.CONFIG_FILE).write_text(json.dumps(config))


def _non_finite(run: Path, domain: str) -> None:
    tensors = load_file(str(run / checkpoint.MODEL_FILE))
    name = sorted(tensors)[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(run / checkpoint.MODEL_FILE))


def _truncated(run: Path, domain: str) -> None:
    data = (run / checkpoint.MODEL_FILE).read_bytes()
    (run / checkpoint.MODEL_FILE).write_bytes(data[: len(data) // 2])


def _foreign(run: Path, domain: str) -> None:
    other = "audio" if domain == "music" else "music"
    shutil.rmtree(run)
    LOADERS[other][0](run)


def _unknown_field(run: Path, domain: str) -> None:
    # A model written by another version of the code: one field more than this one knows.
    config = run / checkpoint.CONFIG_FILE
    config.write_text(json.dumps(json.loads(config.read_text()) | {"band_split_hz": 1500}))


BREAKAGES = {
    "missing directory": (lambda run, domain: shutil.rmtree(run), "no such model directory"),
    "missing weights": (
        lambda run, domain: (run / checkpoint.MODEL_FILE).unlink(),
        "model.safetensors: missing",
    ),
    "missing config": (
        lambda run, domain: (run / checkpoint.CONFIG_FILE).unlink(),
        "config.json: missing",
    ),
    "truncated weights": (_truncated, "model.safetensors: not a readable safetensors file"),
    "config not matching the weights": (
        _weights_of_another_size,
        "model.safetensors does not match config.json",
    ),
    "non-finite weights": (_non_finite, "holds NaN or infinite values"),
    "the other domain's model": (_foreign, "is it a model of the other domain"),
    "a config field this code does not know": (
        _unknown_field,
        "fields ['band_split_hz'] are not",
    ),
}


@pytest.mark.parametrize("domain", sorted(LOADERS))
@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_model_directory_is_refused_naming_file_and_reason(tmp_path, domain, breakage):
    make, load = LOADERS[domain]
    run = make(tmp_path / "run")
    load(run)  # whole, it loads
    damage, reason = BREAKAGES[breakage]
    damage(run, domain)
    with pytest.raises(checkpoint.ModelDirectoryError, match=re.escape(reason)) as info:
        load(run)
    assert str(run) in str(info.value)
