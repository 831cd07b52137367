"""Training throughput of both trainers against a bare PyTorch loop on the same model.

    PYTHONPATH=. .venv/bin/python -m bench.bench_train --threads 2 --steps 40

Ours is the trainer a flow runs (`models.symbolic.train.train`, `models.audio.train.
train_audio_unet`) at world size 1: data streamed from Parquet, the learning-rate schedule,
logging, and one validation and checkpoint at the last step. The bare loop is what a user writes
by hand: the same model, optimizer and batch shape, batches already in memory, nothing else.
Both are timed over the same steps after `--warmup` untimed ones (the steady state), and our
whole call is timed too (the last step's validation and checkpoint included).

Model FLOP utilization (MFU) is the model's training FLOPs per second (forward and backward:
6 x parameters per token plus attention, as nanoGPT counts them; for the audio model its
forward multiply-adds counted by hook, times 3) over the peak this device reaches on a large
matrix product in the training dtype, measured in the same run. On a GPU the dtype is bf16 and
fused AdamW is used, as in training. Data are synthetic with the real schemas (speed does not
depend on the notes or the sounds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from datasets.audio.pairs import PairSpec, make_pairs, pairs_schema
from datasets.audio.shards import write_pairs_table
from datasets.io import write_parquet_atomic
from datasets.symbolic.tokenizer import Vocab
from datasets.symbolic.tokens import token_table
from models.audio.config import AudioTrainConfig, preset, profile_config
from models.audio.data import iter_epoch, model_inputs, pair_shards
from models.audio.infer import build_model
from models.audio.losses import stft_loss
from models.audio.train import train_audio_unet
from models.checkpoint import pick_device
from models.symbolic.config import MusicConfig, profile_configs
from models.symbolic.data import IGNORE
from models.symbolic.train import autocast, make_optimizer, train
from models.symbolic.transformer import MusicTransformer

VOCAB = Vocab()


def peak_flops(device: torch.device, dtype: torch.dtype, size: int = 2048) -> float:
    """FLOP/s of a large square matrix product: what this device reaches at best."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for _ in range(10):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_steps(step: Callable[[], None], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per step over `steps` steps after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def validated_at_end(config: Any, steps: int, **settings: Any) -> Any:
    """A trainer's config for `steps` steps that logs, validates and checkpoints only at the
    last one (outside the timed steady state)."""
    return dataclasses.replace(
        config, steps=steps, log_every=steps, checkpoint_every=steps, **settings
    )


class StepClock:
    """A trainer's progress callback that notes when each step ended (steady-state timing
    of our loop from inside it)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, fraction: float) -> None:
        self.times.append(time.perf_counter())

    def seconds_per_step(self, warmup: int) -> float:
        # From the end of the warm-up to the end of the step before the last (which validates
        # and checkpoints).
        span = self.times[warmup - 1 : -1]
        return (span[-1] - span[0]) / (len(span) - 1)


# ---------------------------------------------------------------- music


def write_tokens(directory: Path, pieces: int, length: int, seed: int = 0) -> Path:
    """Token files in the data contract's schema, random notes."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", pieces), ("valid", 8)):
        rows = []
        for index in range(count):
            tokens = rng.integers(3, VOCAB.size, length)
            tokens[0] = VOCAB.bos
            rows.append(
                {
                    "piece_id": f"{split}{index:04d}",
                    "split": split,
                    "transpose": 0,
                    "tokens": tokens.tolist(),
                    "beats": (np.arange(length) // 4).tolist(),
                    "bar_steps": 16,
                    "n_notes": length // 3,
                    "n_moved": 0,
                    "n_merged": 0,
                    "n_dropped": 0,
                }
            )
        write_parquet_atomic(directory / f"{split}.parquet", token_table(rows))
    return directory


def music_flops_per_token(config: MusicConfig, parameters: int) -> float:
    span = config.seg_len + config.mem_len
    return 6 * parameters + 12 * config.n_layer * config.d_model * span


def bench_music(
    profile: str, steps: int, warmup: int, work: Path, compiled: bool
) -> dict[str, Any]:
    device = pick_device()
    model_config, train_config = profile_configs(profile, VOCAB.size, 0)
    total = warmup + steps + 1
    train_config = validated_at_end(train_config, total, valid_every=total, valid_pieces=8)
    batch, seg = train_config.batch_size, model_config.seg_len
    tokens_dir = write_tokens(work / "tokens", pieces=256, length=4 * seg)

    clock = StepClock()
    start = time.perf_counter()
    result = train(
        work / "music-run",
        tokens_dir / "train.parquet",
        tokens_dir / "valid.parquet",
        model_config,
        train_config,
        progress=clock,
        compiled=compiled,
    )
    whole_call = time.perf_counter() - start
    ours = clock.seconds_per_step(warmup)

    model = MusicTransformer(model_config, torch.Generator().manual_seed(0)).to(device).train()
    optimizer = make_optimizer(model, train_config)
    forward = torch.compile(model) if compiled else model
    data = torch.randint(3, VOCAB.size, (batch, seg + 1), device=device)
    beats = torch.zeros_like(data)
    bars = torch.full_like(data, 16)
    mems: list[torch.Tensor] = []

    def bare_step() -> None:
        nonlocal mems
        with autocast(device, train_config.bf16):
            logits, mems = forward(data[:, :-1], beats[:, :-1], bars[:, :-1], mems)
        loss = F.cross_entropy(
            logits.float().flatten(0, 1), data[:, 1:].flatten(), ignore_index=IGNORE
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
        optimizer.step()

    bare = timed_steps(bare_step, warmup, steps, device)
    tokens = batch * seg
    flops = music_flops_per_token(model_config, result["parameters"]) * tokens
    return figures("music", profile, tokens, "tokens", ours, bare, whole_call, total, flops) | {
        "parameters": result["parameters"],
        "bf16": train_config.bf16 and device.type == "cuda",
    }


# ---------------------------------------------------------------- audio


def write_pairs(directory: Path, patch: int, seconds: float, seed: int = 0) -> Path:
    """Pair shards in the data contract's schema from synthetic harmonic tones in noise."""
    spec = PairSpec(hr_rate=16000, ratio=4, filter="soxr", patch=patch, stride=patch)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * spec.hr_rate)) / spec.hr_rate
    for split, files in (("train", 8), ("valid", 1)):
        tables = []
        for index in range(files):
            f0 = rng.uniform(80, 400)
            tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 30))
            hr = 0.1 * tone + 0.01 * rng.standard_normal(len(t))
            table, _ = make_pairs(f"{split}{index}", hr.astype(np.float32), spec)
            split_column = pa.array([split] * table.num_rows, pa.string())
            tables.append(table.add_column(1, "split", split_column))
        joined = pa.concat_tables(tables).cast(pairs_schema(spec))
        write_pairs_table(directory / f"{split}-00000.parquet", joined)
    return directory


def audio_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of the convolutions and linear layers (hooks)."""
    total = 0

    def count(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        weight = module.weight
        if isinstance(module, torch.nn.Conv1d):
            total += output.numel() * weight.shape[1] * weight.shape[2]
        else:
            total += output.numel() * weight.shape[1]

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, torch.nn.Conv1d | torch.nn.Linear)
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return total


def bench_audio(
    profile: str, arch: str, steps: int, warmup: int, work: Path, compiled: bool
) -> dict[str, Any]:
    device = pick_device()
    config: AudioTrainConfig = profile_config(profile, 0, arch=arch)
    total = warmup + steps + 1
    config = validated_at_end(config, total, eval_patches=8, cosine=False)
    patch = 8192
    pairs = write_pairs(work / f"pairs-{arch}", patch, seconds=12.0)
    clock = StepClock()
    start = time.perf_counter()
    run_dir = work / f"audio-run-{arch}"
    summary = train_audio_unet(pairs, run_dir, config, progress=clock, compiled=compiled)
    whole_call = time.perf_counter() - start
    ours = clock.seconds_per_step(warmup)

    model_config = preset(config.preset, ratio=4, hr_rate=16000, patch=patch)
    model = build_model(model_config, generator=torch.Generator().manual_seed(0)).to(device)
    forward = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, fused=True if device.type == "cuda" else None
    )
    # The first batch of the same pairs, in memory (a target equal to the input, or noise,
    # would leave the gradients near zero, where a CPU slows down on subnormal floats).
    hr, lr = next(iter_epoch(pair_shards(pairs, "train"), config.batch_size, 0, 0))
    x = torch.from_numpy(model_inputs(lr, 4, patch)[:, None, :]).to(device)
    y = torch.from_numpy(hr[:, None, :]).to(device)

    def bare_step() -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            estimate = forward(x)
        estimate = estimate.float()
        loss = torch.mean((estimate - y) ** 2)
        if config.stft_weight:
            loss = loss + config.stft_weight * stft_loss(estimate[:, 0], y[:, 0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    bare = timed_steps(bare_step, warmup, steps, device)
    flops = 2 * 3 * audio_macs(model, x)  # forward MACs x 2 FLOPs, x 3 for the backward
    samples = config.batch_size
    return figures(
        f"audio-{arch}", profile, samples, "samples", ours, bare, whole_call, total, flops
    ) | {
        "parameters": summary["parameters"],
        "patch": patch,
    }


def figures(
    name: str,
    profile: str,
    per_step: int,
    unit: str,
    ours: float,
    bare: float,
    whole_call: float,
    total_steps: int,
    flops_per_step: float,
) -> dict[str, Any]:
    return {
        "model": name,
        "profile": profile,
        f"{unit}_per_step": per_step,
        f"ours_{unit}_per_s": per_step / ours,
        f"bare_{unit}_per_s": per_step / bare,
        "overhead_pct": 100 * (ours / bare - 1),
        "ours_whole_call_s": whole_call,
        "whole_call_steps": total_steps,
        "train_flops_per_step": flops_per_step,
        "ours_flops_per_s": flops_per_step / ours,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profile", default="full", choices=["tiny", "quick", "full"])
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides")
    parser.add_argument("--out", help="also write the results here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = peak_flops(device, dtype)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        rows.append(bench_music(args.profile, args.steps, args.warmup, work, args.compile))
        for arch in ("bwe", "unet"):
            rows.append(
                bench_audio(args.profile, arch, args.steps, args.warmup, work, args.compile)
            )
    for row in rows:
        row["mfu_pct"] = 100 * row["ours_flops_per_s"] / peak
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": args.threads,
        "compile": args.compile,
        "peak_matmul_flops_per_s": peak,
        "peak_dtype": str(dtype),
        "rows": rows,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
