"""Checkpoints as safetensors + JSON: nothing is ever unpickled from a data directory.

A checkpoint directory holds
  model.safetensors   the model's weights
  config.json         the model config (a dataclass, as a dict)
  train_state.safetensors + train_state.json   optimizer tensors and scalars, step, RNG state
so that a killed run resumes where it stopped. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from datasets.io import atomic_path, write_json_atomic

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_TENSORS_FILE = "train_state.safetensors"
STATE_JSON_FILE = "train_state.json"

ConfigT = TypeVar("ConfigT")


def pick_device() -> torch.device:
    """Where models train and load by default: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def save_model(directory: str | Path, model: torch.nn.Module, config: Any) -> Path:
    """Write weights and config; the config file is written last and marks a complete save."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    with atomic_path(directory / MODEL_FILE) as tmp:
        save_file(tensors, str(tmp))
    write_json_atomic(directory / CONFIG_FILE, dataclasses.asdict(config))
    return directory


def load_config(directory: str | Path, config_cls: type[ConfigT]) -> ConfigT:
    raw = json.loads((Path(directory) / CONFIG_FILE).read_text())
    known = {f.name for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    return config_cls(**{k: v for k, v in raw.items() if k in known})


def load_weights(directory: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    tensors = load_file(str(Path(directory) / MODEL_FILE), device="cpu")
    model.load_state_dict(tensors)
    return model


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for param_id, slots in state["state"].items():
        scalars["state"][str(param_id)] = {}
        for slot, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{slot}"] = value.detach().to("cpu").contiguous()
            else:
                scalars["state"][str(param_id)][slot] = value
    return tensors, scalars


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {
        int(pid): dict(slots) for pid, slots in scalars["state"].items()
    }
    for key, value in tensors.items():
        param_id, slot = key.split(".", 1)
        state.setdefault(int(param_id), {})[slot] = value
    return {"state": state, "param_groups": scalars["param_groups"]}


def save_train_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any],
    generator: torch.Generator | None = None,
) -> None:
    """Save optimizer state, a JSON-able `extra` dict (step, epoch, ...) and the RNG state."""
    directory = Path(directory)
    tensors, scalars = _flatten_optimizer(optimizer.state_dict())
    if generator is not None:
        tensors["__generator__"] = generator.get_state()
    with atomic_path(directory / STATE_TENSORS_FILE) as tmp:
        save_file(tensors, str(tmp))
    write_json_atomic(directory / STATE_JSON_FILE, {"optimizer": scalars, "extra": extra})


def load_train_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
) -> dict[str, Any] | None:
    """Restore what `save_train_state` wrote; None when there is nothing to resume."""
    directory = Path(directory)
    json_path = directory / STATE_JSON_FILE
    tensor_path = directory / STATE_TENSORS_FILE
    if not (json_path.exists() and tensor_path.exists()):
        return None
    saved = json.loads(json_path.read_text())
    tensors = load_file(str(tensor_path), device="cpu")
    generator_state = tensors.pop("__generator__", None)
    optimizer.load_state_dict(_unflatten_optimizer(tensors, saved["optimizer"]))
    if generator is not None and generator_state is not None:
        generator.set_state(generator_state)
    return saved["extra"]
