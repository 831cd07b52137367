"""Train an AudioUNet on the low/high-resolution pairs dataset (models.audio.data).

The loss is the mean squared error of the waveform plus, optionally, a multi-resolution STFT term
(models.audio.losses); Adam with the paper's settings.

A run directory holds the final `model.safetensors` + `config.json`, `train.json` and
`metrics.parquet` (one row per logged step). While training, `checkpoint/` holds the latest
weights and optimizer state, committed as one by `models.checkpoint.commit_checkpoint`, so a
killed run resumes from the last whole checkpoint (one a kill cut short is completed or discarded
on resume). The checkpoint also holds the loss sums of the current logging window, so a resumed
run writes the same bytes (weights, metrics) as an uninterrupted one whatever the log and
checkpoint intervals.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from datasets.io import write_json_atomic, write_parquet_atomic
from models.audio.config import AudioModelConfig, AudioTrainConfig, preset
from models.audio.data import (
    batches_per_epoch,
    iter_epoch,
    load_eval_set,
    model_inputs,
    pair_shards,
    read_pairs_info,
)
from models.audio.infer import build_model, load_model_config, predict_patches
from models.audio.losses import stft_loss
from models.audio.metrics import snr_db
from models.checkpoint import (
    STATE_JSON_FILE,
    finish_checkpoint,
    load_checkpoint,
    pick_device,
    save_checkpoint,
    save_model,
)

CHECKPOINT_DIR = "checkpoint"
# The run's training config and its pairs' metadata (the filter evaluation degrades with).
TRAIN_JSON = "train.json"
METRICS_FILE = "metrics.parquet"

METRICS_SCHEMA = pa.schema(
    [
        ("step", pa.int64()),
        ("epoch", pa.int64()),
        ("loss", pa.float64()),
        ("mse", pa.float64()),
        ("eval_mse", pa.float64()),
        ("eval_snr_db", pa.float64()),
        ("eval_spline_snr_db", pa.float64()),
    ]
)


def _write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["step"]), schema=METRICS_SCHEMA)
    write_parquet_atomic(run_dir / METRICS_FILE, table)


def learning_rate(config: AudioTrainConfig, step: int) -> float:
    """The rate of step `step` (from 0): constant, or on the cosine from `lr` down to
    `min_lr_ratio * lr` at the last step."""
    if not config.cosine:
        return config.lr
    progress = step / max(1, config.steps - 1)
    floor = config.min_lr_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _checkpoint_extra(run_dir: str | Path) -> dict[str, Any]:
    state = Path(run_dir) / CHECKPOINT_DIR / STATE_JSON_FILE
    return json.loads(state.read_text())["extra"]


def train_seconds(run_dir: str | Path) -> float | None:
    """Wall time of training over every call of the run in `run_dir`, from its last checkpoint
    (None: a checkpoint from before the trainer recorded it)."""
    return _checkpoint_extra(run_dir).get("seconds")


def trained_steps(run_dir: str | Path) -> int:
    """The steps the run in `run_dir` has trained, from its last checkpoint."""
    return int(_checkpoint_extra(run_dir)["step"])


def train_audio_unet(
    pairs_dir: str | Path,
    run_dir: str | Path,
    config: AudioTrainConfig,
    model_config: AudioModelConfig | None = None,
    progress: Callable[[float], None] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train (or resume training) a model on `pairs_dir`; write the run into `run_dir`.

    `model_config` defaults to the preset named in `config`, with ratio, hr_rate and patch taken
    from the pairs dataset. Returns a small summary record.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    info = read_pairs_info(pairs_dir)
    shards = pair_shards(pairs_dir, "train")
    device = device or pick_device().type
    generator = torch.Generator().manual_seed(config.seed)

    checkpoint = run_dir / CHECKPOINT_DIR
    # A checkpoint a kill interrupted is completed or discarded; a whole one is resumed from.
    resuming = finish_checkpoint(checkpoint)
    if resuming:
        model_config = load_model_config(checkpoint)
    elif model_config is None:
        model_config = preset(
            config.preset, ratio=info.ratio, hr_rate=info.hr_rate, patch=info.patch
        )
    if model_config.ratio != info.ratio or info.patch % model_config.multiple:
        raise ValueError(
            f"{pairs_dir}: pairs at ratio {info.ratio} with patch {info.patch} do not fit a "
            f"model for ratio {model_config.ratio} needing lengths divisible by "
            f"{model_config.multiple}"
        )
    model_config = dataclasses.replace(model_config, patch=info.patch)
    # On the device before the optimizer exists: loaded Adam state follows its parameters.
    model = build_model(model_config, generator=generator).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))

    step, epoch, batch_in_epoch, rows = 0, 0, 0, []
    # Loss and MSE of the steps since the last logged row (a checkpoint may fall between rows).
    losses: list[float] = []
    mses: list[float] = []
    earlier_seconds = 0.0  # training wall time of the calls before this one (a resumed run)
    if resuming:
        extra = load_checkpoint(checkpoint, model, optimizer, generator)
        step, epoch, batch_in_epoch = extra["step"], extra["epoch"], extra["batch_in_epoch"]
        losses, mses = list(extra.get("losses", [])), list(extra.get("mses", []))
        earlier_seconds = float(extra.get("seconds", 0.0))
        if (run_dir / METRICS_FILE).exists():
            logged = pq.read_table(run_dir / METRICS_FILE).to_pylist()
            rows = [row for row in logged if row["step"] <= step]

    eval_hr, eval_input = load_eval_set(pairs_dir, config.eval_split, config.eval_patches, info)
    spline_snr = snr_db(eval_hr, eval_input)
    model.train()
    while step < config.steps:
        batches = iter_epoch(shards, config.batch_size, config.seed, epoch)
        for index, (hr, lr) in enumerate(batches):
            if index < batch_in_epoch:
                continue
            x = torch.from_numpy(model_inputs(lr, info.ratio, hr.shape[1])[:, None, :])
            y = torch.from_numpy(hr[:, None, :])
            x, y = x.to(device), y.to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            estimate = model(x, generator=generator if device == "cpu" else None)
            mse = torch.mean((estimate - y) ** 2)
            loss = mse
            if config.stft_weight:
                loss = mse + config.stft_weight * stft_loss(estimate[:, 0], y[:, 0])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            batch_in_epoch = index + 1
            losses.append(loss.item())
            mses.append(mse.item())
            if step % config.log_every == 0 or step == config.steps:
                estimate_eval = predict_patches(model, eval_input)
                rows.append(
                    {
                        "step": step,
                        "epoch": epoch,
                        "loss": float(np.mean(losses)),
                        "mse": float(np.mean(mses)),
                        "eval_mse": float(np.mean((estimate_eval - eval_hr) ** 2)),
                        "eval_snr_db": snr_db(eval_hr, estimate_eval),
                        "eval_spline_snr_db": spline_snr,
                    }
                )
                losses, mses = [], []
                _write_metrics(run_dir, rows)
            if step % config.checkpoint_every == 0 or step == config.steps:
                extra = {
                    "step": step,
                    "epoch": epoch,
                    "batch_in_epoch": batch_in_epoch,
                    "losses": losses,
                    "mses": mses,
                    "seconds": earlier_seconds + time.perf_counter() - started,
                }
                save_checkpoint(checkpoint, model, optimizer, extra, generator)
            if progress is not None:
                progress(step / config.steps)
            if step >= config.steps:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0

    # Whole epochs trained: from the counters the checkpoint holds, so a run resumed from its
    # last checkpoint reports (and stamps) the same number as an uninterrupted one.
    epochs = epoch + int(batch_in_epoch >= batches_per_epoch(shards, config.batch_size))
    save_model(run_dir, model, model_config)
    write_json_atomic(
        run_dir / TRAIN_JSON,
        {"config": dataclasses.asdict(config), "pairs": dataclasses.asdict(info)},
    )
    last = rows[-1] if rows else {}
    return {
        "run_dir": str(run_dir),
        "steps": step,
        "epochs": epochs,
        "parameters": model.num_parameters(),
        "final_mse": last.get("mse", math.nan),
        "eval_snr_db": last.get("eval_snr_db", math.nan),
        "eval_spline_snr_db": spline_snr,
        "seconds": round(time.perf_counter() - started, 1),
    }
