"""Train an AudioUNet on the low/high-resolution pairs dataset.

The pairs dataset (`data/audio/pairs/<split>-NNNNN.parquet`, written by `datasets.audio.pairs`) is
streamed one shard at a time: each epoch visits the shards and the rows within a shard in an
order drawn from (seed, epoch), so a resumed run sees exactly the batches it would have seen.
The model input is the cubic-spline interpolation of `lr` to the length of `hr` (the paper's
set-up; the model adds a residual to it); the loss is the mean squared error of the waveform
plus, optionally, a multi-resolution STFT term.

A run directory holds the final `model.safetensors` + `config.json` and `metrics.parquet`
(one row per logged step). While training, `checkpoint/step-NNNNNNN/` holds the latest
weights and optimizer state and `checkpoint/latest.json` points at it; the pointer is replaced
atomically after the new checkpoint is complete, so a killed run resumes from the last one;
checkpoints the pointer does not name (older ones, or one a kill cut short) are removed. The
checkpoint also holds the loss sums of the current logging window, so a resumed run writes the
same bytes (weights, metrics) as an uninterrupted one whatever the log and checkpoint intervals.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from datasets.audio.signals import spline_upsample
from datasets.io import write_json_atomic, write_parquet_atomic
from models.audio.metrics import snr_db
from models.audio.unet import AudioUNet, AudioUNetConfig, preset
from models.checkpoint import (
    load_config,
    load_train_state,
    load_weights,
    pick_device,
    save_model,
    save_train_state,
)

CHECKPOINT_DIR = "checkpoint"
LATEST_FILE = "latest.json"
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


@dataclass
class AudioTrainConfig:
    preset: str = "quick"
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-4  # the paper's Adam settings: lr 3e-4, betas (0.9, 0.999)
    # Weight of the multi-resolution STFT term; 0 = MSE only. The STFT term is scale-free (about
    # 1) while the MSE of music in [-1, 1] is about 1e-4, so useful weights are small (~1e-5).
    stft_weight: float = 0.0
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 100
    eval_split: str = "valid"
    eval_patches: int = 64


PROFILES: dict[str, AudioTrainConfig] = {
    # For task and flow tests: seconds.
    "tiny": AudioTrainConfig(
        preset="tiny",
        steps=30,
        batch_size=4,
        lr=3e-3,
        log_every=10,
        checkpoint_every=10,
        eval_patches=8,
    ),
    # `--profile quick`: about two minutes on 2 CPU cores at patch 8192.
    "quick": AudioTrainConfig(
        preset="quick",
        steps=100,
        batch_size=8,
        lr=3e-3,
        log_every=20,
        checkpoint_every=50,
        eval_patches=16,
    ),
    "full": AudioTrainConfig(
        preset="full",
        steps=2000,
        batch_size=8,
        lr=1e-3,
        log_every=100,
        checkpoint_every=200,
        eval_patches=64,
    ),
}


def profile_config(profile: str, seed: int, **overrides: Any) -> AudioTrainConfig:
    """The training config of a profile; `full` takes the paper's model when a GPU is there."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    config = dataclasses.replace(PROFILES[profile], seed=seed)
    if profile == "full" and torch.cuda.is_available():
        # The paper's model with its Adam learning rate (1e-3 suits the small CPU model); 8200
        # steps of 32 patches are 12.7 epochs of the chorale renders, 16.7 min on one H100.
        config = dataclasses.replace(
            config,
            preset="paper",
            batch_size=32,
            lr=3e-4,
            steps=8200,
            log_every=200,
            checkpoint_every=1000,
        )
    return dataclasses.replace(config, **overrides)


@dataclass
class PairsInfo:
    """What the pairs dataset's schema metadata says."""

    hr_rate: int
    ratio: int
    filter: str
    patch: int
    bits: int | None


def pair_shards(pairs_dir: str | Path, split: str) -> list[Path]:
    return sorted(Path(pairs_dir).glob(f"{split}-*.parquet"))


def read_pairs_info(pairs_dir: str | Path, split: str = "train") -> PairsInfo:
    shards = pair_shards(pairs_dir, split)
    if not shards:
        raise FileNotFoundError(f"no {split}-*.parquet shards in {pairs_dir}")
    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(shards[0]).metadata or {}).items()}
    missing = {"hr_rate", "ratio", "filter", "patch"} - set(meta)
    if missing:
        raise ValueError(f"{shards[0]}: schema metadata lacks {sorted(missing)}")
    bits = meta.get("bits", "")
    return PairsInfo(
        hr_rate=int(meta["hr_rate"]),
        ratio=int(meta["ratio"]),
        filter=meta["filter"],
        patch=int(meta["patch"]),
        bits=int(bits) if bits not in ("", "None", "none", "null") else None,
    )


def model_inputs(lr: np.ndarray, ratio: int, patch: int) -> np.ndarray:
    """(B, n_lr) low-res rows -> (B, patch) spline interpolations: the model's input."""
    return np.stack([spline_upsample(row, ratio, patch) for row in lr]).astype(np.float32)


def _rows(table: pa.Table, column: str) -> np.ndarray:
    """A list<float32> column of equal-length lists as a 2-D array."""
    col = table.column(column).combine_chunks()
    values = col.values.to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(len(col), len(values) // max(len(col), 1))


def iter_epoch(
    shards: list[Path], batch_size: int, seed: int, epoch: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (hr, lr) batches of one epoch, in an order fixed by (seed, epoch).

    Rows left over at the end of a shard carry into the next; a last partial batch is dropped,
    unless the whole epoch is smaller than one batch (tiny sets still train).
    """
    rng = np.random.default_rng([seed, epoch])
    carry_hr: list[np.ndarray] = []
    carry_lr: list[np.ndarray] = []
    yielded = False
    for index in rng.permutation(len(shards)):
        table = pq.read_table(shards[index], columns=["hr", "lr"])
        hr, lr = _rows(table, "hr"), _rows(table, "lr")
        order = rng.permutation(len(hr))
        carry_hr.extend(hr[order])
        carry_lr.extend(lr[order])
        while len(carry_hr) >= batch_size:
            yield np.stack(carry_hr[:batch_size]), np.stack(carry_lr[:batch_size])
            del carry_hr[:batch_size], carry_lr[:batch_size]
            yielded = True
    if carry_hr and not yielded:
        yield np.stack(carry_hr), np.stack(carry_lr)


def load_eval_set(
    pairs_dir: str | Path, split: str, limit: int, info: PairsInfo
) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` pairs of `split` in file order (falling back to train): hr and input."""
    shards = pair_shards(pairs_dir, split) or pair_shards(pairs_dir, "train")
    hr_parts, lr_parts, count = [], [], 0
    for shard in shards:
        table = pq.read_table(shard, columns=["hr", "lr"])
        hr_parts.append(_rows(table, "hr"))
        lr_parts.append(_rows(table, "lr"))
        count += table.num_rows
        if count >= limit:
            break
    hr = np.concatenate(hr_parts)[:limit]
    lr = np.concatenate(lr_parts)[:limit]
    return hr, model_inputs(lr, info.ratio, hr.shape[1])


def stft_loss(
    estimate: torch.Tensor,
    target: torch.Tensor,
    resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512)),
) -> torch.Tensor:
    """Multi-resolution STFT loss (Yamamoto et al. 2020): spectral convergence + log-magnitude
    L1, averaged over the resolutions. Signals are (B, L)."""
    total = estimate.new_zeros(())
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=estimate.device)
        mags = [
            torch.stft(s, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-7)
            for s in (estimate, target)
        ]
        convergence = torch.linalg.norm(mags[1] - mags[0]) / torch.linalg.norm(mags[1])
        log_l1 = torch.mean(torch.abs(torch.log(mags[1]) - torch.log(mags[0])))
        total = total + convergence + log_l1
    return total / len(resolutions)


@torch.inference_mode()
def predict_patches(model: AudioUNet, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = [
        model(torch.from_numpy(inputs[i : i + batch, None, :]).to(device)).squeeze(1).cpu()
        for i in range(0, len(inputs), batch)
    ]
    model.train(was_training)
    return torch.cat(outputs).numpy()


def _latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / CHECKPOINT_DIR / LATEST_FILE
    if not pointer.exists():
        return None
    return run_dir / CHECKPOINT_DIR / json.loads(pointer.read_text())["dir"]


def _save_checkpoint(
    run_dir: Path,
    model: AudioUNet,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    extra: dict[str, Any],
) -> None:
    name = f"step-{extra['step']:07d}"
    directory = run_dir / CHECKPOINT_DIR / name
    save_model(directory, model, model.config)
    save_train_state(directory, optimizer, extra, generator)
    write_json_atomic(run_dir / CHECKPOINT_DIR / LATEST_FILE, {"dir": name})
    _prune_checkpoints(run_dir, name)


def _prune_checkpoints(run_dir: Path, keep: str) -> None:
    """Remove every checkpoint but `keep`: older ones, and any a kill left half-written."""
    for old in (run_dir / CHECKPOINT_DIR).glob("step-*"):
        if old.name != keep:
            shutil.rmtree(old)


def batches_per_epoch(shards: list[Path], batch_size: int) -> int:
    """How many batches `iter_epoch` yields: the last partial batch is dropped unless it is
    the only one."""
    rows = sum(pq.read_metadata(shard).num_rows for shard in shards)
    return max(rows // batch_size, 1 if rows else 0)


def _write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(sorted(rows, key=lambda r: r["step"]), schema=METRICS_SCHEMA)
    write_parquet_atomic(run_dir / METRICS_FILE, table)


def train_audio_unet(
    pairs_dir: str | Path,
    run_dir: str | Path,
    config: AudioTrainConfig,
    model_config: AudioUNetConfig | None = None,
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

    checkpoint = _latest_checkpoint(run_dir)
    if checkpoint is not None:
        model_config = load_config(checkpoint, AudioUNetConfig)
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
    model = AudioUNet(model_config, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))

    step, epoch, batch_in_epoch, rows = 0, 0, 0, []
    # Loss and MSE of the steps since the last logged row (a checkpoint may fall between rows).
    losses: list[float] = []
    mses: list[float] = []
    if checkpoint is not None:
        _prune_checkpoints(run_dir, checkpoint.name)
        load_weights(checkpoint, model)
        extra = load_train_state(checkpoint, optimizer, generator)
        if extra is None:
            raise FileNotFoundError(f"{checkpoint}: weights without optimizer state")
        step, epoch, batch_in_epoch = extra["step"], extra["epoch"], extra["batch_in_epoch"]
        losses, mses = list(extra.get("losses", [])), list(extra.get("mses", []))
        if (run_dir / METRICS_FILE).exists():
            logged = pq.read_table(run_dir / METRICS_FILE).to_pylist()
            rows = [row for row in logged if row["step"] <= step]
    model.to(device)
    # Adam's state was loaded on the CPU; it follows the parameters to the device.
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)

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
                }
                _save_checkpoint(run_dir, model, optimizer, generator, extra)
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
        run_dir / "train.json",
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
