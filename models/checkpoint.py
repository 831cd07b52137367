"""Checkpoints as safetensors + JSON: nothing is ever unpickled from a data directory.

A checkpoint directory holds
  model.safetensors   the model's weights
  config.json         the model config (a dataclass, as a dict)
  train_state.safetensors + train_state.json   optimizer tensors and scalars, step, RNG state
and whatever else a trainer needs to resume exactly (memory, metrics so far, best weights), so
that a killed run resumes where it stopped. Every file is written atomically.

A checkpoint is several files that must agree (weights, metrics and memory of step N with the
optimizer state of step N), so both trainers commit one the same way (`commit_checkpoint`): its
files are written into `<directory>/checkpoint.pending/`, a `commit.json` listing them is written
last, then each is moved over the directory's own file. A kill before the commit record leaves
the previous checkpoint whole (`finish_checkpoint` discards the pending directory on resume); a
kill after it is rolled forward on resume (the remaining files are moved), so no mix of two steps
is ever resumed from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from datasets.io import atomic_path, write_json_atomic

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_TENSORS_FILE = "train_state.safetensors"
STATE_JSON_FILE = "train_state.json"
PENDING_DIR = "checkpoint.pending"
COMMIT_FILE = "commit.json"

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


class ModelDirectoryError(ValueError):
    """A model directory that cannot be loaded: the message names the file and the reason, so a
    person can act on it instead of reading a traceback from deep inside torch."""


def load_config(directory: str | Path, config_cls: type[ConfigT]) -> ConfigT:
    """The config in `directory/config.json`, refused with `ModelDirectoryError` when it is
    missing, damaged, or the config of another kind of model (other fields)."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise ModelDirectoryError(f"{directory}: no such model directory")
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelDirectoryError(
            f"{path}: missing; a model directory holds {CONFIG_FILE} and {MODEL_FILE}"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelDirectoryError(f"{path}: not a readable JSON config ({exc})") from exc
    fields = {f.name for f in dataclasses.fields(config_cls)}  # type: ignore[arg-type]
    if not isinstance(raw, dict) or set(raw) - fields:
        foreign = sorted(set(raw) - fields) if isinstance(raw, dict) else raw
        raise ModelDirectoryError(
            f"{path}: fields {foreign} are not {config_cls.__name__}'s; is it a model of the "
            "other domain, or one written by another version of this code?"
        )
    try:
        return config_cls(**raw)
    except (TypeError, ValueError) as exc:
        raise ModelDirectoryError(f"{path}: not a valid {config_cls.__name__}: {exc}") from exc


def load_weights(directory: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    """Load `directory/model.safetensors` into `model`, refused with `ModelDirectoryError` when
    the file is missing or damaged, does not fit the model its config describes, or holds
    non-finite values."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise ModelDirectoryError(f"{path}: missing; the run has no saved weights")
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ModelDirectoryError(
            f"{path}: not a readable safetensors file (truncated or damaged?): {exc}"
        ) from exc
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    reshaped = [
        f"{name} {tuple(tensors[name].shape)} != {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in tensors and tensors[name].shape != tensor.shape
    ]
    if missing or unexpected or reshaped:
        raise ModelDirectoryError(
            f"{path} does not match {CONFIG_FILE} beside it: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, other shapes {reshaped[:5]}"
        )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelDirectoryError(f"{path}: tensor {name} holds NaN or infinite values")
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


def commit_checkpoint(directory: str | Path, write: Callable[[Path], None]) -> None:
    """Commit the files `write(pending)` puts in a fresh pending directory as one checkpoint of
    `directory`, then move them into place (module doc)."""
    directory = Path(directory)
    pending = directory / PENDING_DIR
    if pending.exists():
        shutil.rmtree(pending)
    pending.mkdir(parents=True)
    write(pending)
    files = sorted(p.name for p in pending.iterdir() if p.is_file())
    write_json_atomic(pending / COMMIT_FILE, {"files": files})
    finish_checkpoint(directory)


def finish_checkpoint(directory: str | Path) -> bool:
    """Complete a committed checkpoint left in `directory/checkpoint.pending/` (move its files
    over the directory's), or discard one a kill cut short before its commit record; then say
    whether `directory` holds a whole checkpoint to resume from."""
    directory = Path(directory)
    pending = directory / PENDING_DIR
    if pending.is_dir():
        commit = pending / COMMIT_FILE
        if commit.exists():
            for name in json.loads(commit.read_text())["files"]:
                if (pending / name).exists():  # moved already when a kill came mid-way
                    os.replace(pending / name, directory / name)
            commit.unlink()
        shutil.rmtree(pending)
    return has_checkpoint(directory)


def has_checkpoint(directory: str | Path) -> bool:
    """Whether `directory` holds a whole checkpoint to resume from (once `finish_checkpoint`
    has run)."""
    return (Path(directory) / STATE_JSON_FILE).exists()


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any],
    generator: torch.Generator | None = None,
    write_more: Callable[[Path], None] | None = None,
) -> None:
    """Commit the model (weights and its `config`), the train state (`save_train_state`) and
    the files `write_more(pending)` adds as one checkpoint of `directory`."""

    def write(pending: Path) -> None:
        save_model(pending, model, model.config)
        if write_more is not None:
            write_more(pending)
        save_train_state(pending, optimizer, extra, generator)

    commit_checkpoint(directory, write)


def load_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Restore what `save_checkpoint` committed (after `finish_checkpoint` said one stands):
    weights, optimizer and generator state; returns the `extra` dict."""
    load_weights(directory, model)
    extra = load_train_state(directory, optimizer, generator)
    if extra is None:
        raise FileNotFoundError(f"{directory}: weights without optimizer state")
    return extra
