"""Training the music Transformer: segments streamed from Parquet (models.symbolic.data), AdamW
with warm-up and cosine decay, gradient clipping, resumable runs.

A run directory holds the checkpoint (model.safetensors, config.json, train_state.*,
memory.safetensors), train_config.json and metrics.parquet; a killed run started again on the
same directory replays the data stream to its last checkpoint and goes on from there, giving the
same bytes (weights, metrics) as an uninterrupted run.

The run keeps its best weights: each validation that beats every earlier one is checkpointed
with a copy of the weights in best.safetensors, and a finished run's model.safetensors holds
the weights of its best validation step (train_state.json names it), not of its last step. On a
small corpus a long run overfits (the `large` profile on JSB: valid NLL 0.51 at step 1000, 1.04
at step 4000), so the last weights are rarely the ones to evaluate or sample from.

Checkpoints are committed as one by `models.checkpoint.commit_checkpoint` (weights, memory,
metrics and optimizer state of one step, or the previous checkpoint whole), so no mix of two steps
is ever resumed from.

Under torchrun (`python -m models.symbolic.train`, started by the train task for more than one
process) the run is data-parallel (`models.distributed`): every rank lays out the same lanes and
trains on its own lanes, with their memory; the loss is the global batch's mean; rank 0 validates
and writes. The checkpoint holds the memory of every lane, so a run resumes at any world size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.distributed.elastic.multiprocessing.errors import record

from datasets.io import atomic_path, write_json_atomic, write_parquet_atomic
from models.checkpoint import (
    MODEL_FILE,
    load_checkpoint,
    load_config,
    load_weights,
    save_checkpoint,
)
from models.distributed import (
    Ranks,
    barrier,
    check_batch,
    gather_rows,
    mean_over_ranks,
    own_rows,
    rank_device,
    resumable,
    run_rank,
    sum_over_ranks,
    wrap_model,
)
from models.symbolic.config import MusicConfig, TrainConfig
from models.symbolic.data import IGNORE, lane_segments, shuffled_pieces, targets_of
from models.symbolic.evaluate import evaluate
from models.symbolic.transformer import MusicTransformer

MEMORY_FILE = "memory.safetensors"
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_PARQUET = "metrics.parquet"
BEST_FILE = "best.safetensors"

METRICS_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # "step" | "epoch"
        ("step", pa.int64()),
        ("epoch", pa.int64()),
        ("tokens_seen", pa.int64()),
        ("lr", pa.float64()),
        ("train_loss", pa.float64()),
        ("valid_nll", pa.float64()),  # null where not measured
    ]
)


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr` at the last step."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


def make_optimizer(model: MusicTransformer, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on tensors of two or more dimensions only (not on biases and
    norms), as in nanoGPT; the fused kernel on a GPU."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = True if next(model.parameters()).is_cuda else None
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), fused=fused)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Without it, autocast
    emulates bf16 and a step costs 8x fp32 (measured on a 2-core AVX2 EPYC)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, bf16: bool):
    enabled = device.type == "cuda" or (bf16 and cpu_has_bf16())
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _save_memory(run_dir: Path, mems: list[torch.Tensor]) -> None:
    tensors = {f"layer{i}": m.to("cpu").contiguous() for i, m in enumerate(mems)}
    with atomic_path(run_dir / MEMORY_FILE) as tmp:
        save_file(tensors, str(tmp))


def _load_memory(run_dir: Path, device: torch.device) -> list[torch.Tensor]:
    path = run_dir / MEMORY_FILE
    if not path.exists():
        return []
    tensors = load_file(str(path), device=str(device))
    return [tensors[f"layer{i}"] for i in range(len(tensors))]


def _write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    write_parquet_atomic(run_dir / METRICS_PARQUET, pa.Table.from_pylist(rows, METRICS_SCHEMA))


def _read_metrics(run_dir: Path, up_to_step: int) -> list[dict[str, Any]]:
    path = run_dir / METRICS_PARQUET
    if not path.exists():
        return []
    return [row for row in pq.read_table(path).to_pylist() if row["step"] <= up_to_step]


def train(
    run_dir: str | Path,
    train_path: str | Path,
    valid_path: str | Path,
    model_config: MusicConfig,
    train_config: TrainConfig,
    progress: Callable[[float], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
    stop_at: int | None = None,
    ranks: Ranks = Ranks(),
    compiled: bool = False,
) -> dict[str, Any]:
    """Train (or resume) a run in `run_dir`; returns a small record of what happened.

    `stop_at` ends the call after that step with a checkpoint, as a kill after a checkpoint
    would; calling again resumes. Memory stays bounded by the shuffle buffer and the model.
    `ranks`: this process's place in a data-parallel run (module doc). `compiled`: train through
    `torch.compile` (faster on a GPU after a minute of compiling; off by default).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_batch(train_config.batch_size, ranks)
    device = rank_device(ranks)
    init_generator = torch.Generator().manual_seed(train_config.seed)
    model = MusicTransformer(model_config, generator=init_generator).to(device)
    optimizer = make_optimizer(model, train_config)

    state: dict[str, Any] | None = None
    all_mems: list[torch.Tensor] = []
    if resumable(run_dir, ranks):  # a checkpoint a kill interrupted is completed or discarded
        saved = json.loads((run_dir / TRAIN_CONFIG_FILE).read_text())
        # Fields added to TrainConfig since the run began take their defaults.
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        same_training = set(saved) <= known and TrainConfig(**saved) == train_config
        if load_config(run_dir, MusicConfig) != model_config or not same_training:
            raise ValueError(
                f"{run_dir} holds a run with other settings; resume it unchanged or use a new run"
            )
        state = load_checkpoint(run_dir, model, optimizer)
        all_mems = _load_memory(run_dir, device)
        log(f"resuming {run_dir} at step {state['step']}")
    elif train_config.init_from:
        load_weights(train_config.init_from, model)  # refused with the file and the reason
        log(f"starting {run_dir} from the weights of {train_config.init_from}")
    mems = [own_rows(m, ranks) for m in all_mems]  # this rank's lanes
    start = 0 if state is None else int(state["step"])
    rows = _read_metrics(run_dir, start)
    if ranks.is_main:
        write_json_atomic(run_dir / TRAIN_CONFIG_FILE, dataclasses.asdict(train_config))
    trained = wrap_model(model, ranks)
    if compiled:  # after DDP's wrapper, as PyTorch advises: it compiles between its buckets
        trained = torch.compile(trained)

    data_generator = torch.Generator().manual_seed(train_config.seed + 1)
    pieces = shuffled_pieces(train_path, data_generator, train_config.shuffle_buffer)
    segments = lane_segments(pieces, train_config.batch_size, model_config.seg_len)
    for _ in range(start):  # replay the stream to where the checkpoint left it
        next(segments)

    end = train_config.steps if stop_at is None else min(stop_at, train_config.steps)
    tokens_per_step = train_config.batch_size * model_config.seg_len
    # Running loss sums go into the checkpoint, so a resumed run logs the same numbers.
    sums = state["sums"] if state else {"window": [0.0, 0], "epoch": [0.0, 0]}
    epoch = int(state["epoch"]) if state else 0
    best: dict[str, Any] | None = state.get("best") if state else None  # step, valid_nll
    started = time.perf_counter()
    # Wall time over every call of this run (a resumed run adds to what its checkpoint holds).
    earlier_seconds = float(state.get("seconds", 0.0)) if state else 0.0
    model.train()
    for step in range(start, end):
        segment = next(segments)
        if segment.epoch != epoch:
            rows.append(_epoch_row(step, epoch, tokens_per_step, sums["epoch"]))
            sums["epoch"] = [0.0, 0]
            epoch = segment.epoch
        lr = learning_rate(step, train_config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        tokens = own_rows(segment.tokens, ranks).to(device)
        with autocast(device, train_config.bf16):
            beats = own_rows(segment.beats, ranks).to(device)
            bar_steps = own_rows(segment.bar_steps, ranks).to(device)
            logits, mems = trained(tokens[:, :-1], beats[:, :-1], bar_steps[:, :-1], mems)
        targets = targets_of(tokens)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        if ranks.distributed:
            # Ranks' lanes score different numbers of tokens: weigh each rank's mean by its
            # share, so DDP's average of the gradients is the global batch's mean.
            scored = (targets != IGNORE).sum()
            loss = loss * (scored * ranks.world_size / sum_over_ranks(scored, ranks))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
        optimizer.step()
        (loss_value,) = mean_over_ranks([loss.item()], ranks)
        for key in sums:
            sums[key] = [sums[key][0] + loss_value, sums[key][1] + 1]

        done = step + 1
        last = done == train_config.steps
        logs = done % train_config.log_every == 0 or last
        validates = logs and (done % train_config.valid_every == 0 or last)
        checkpoints = done % train_config.checkpoint_every == 0 or done == end
        improved = False
        # Rows depend on the step only (not on where a call stopped), so a resumed run writes
        # the same metrics as an uninterrupted one.
        if ranks.is_main and logs:
            valid_nll = None
            if validates:
                valid_nll = evaluate(model, valid_path, max_pieces=train_config.valid_pieces)["nll"]
                improved = best is None or valid_nll < best["valid_nll"]
                if improved:
                    best = {"step": done, "valid_nll": valid_nll}
            rows.append(
                {
                    "kind": "step",
                    "step": done,
                    "epoch": epoch,
                    "tokens_seen": done * tokens_per_step,
                    "lr": lr,
                    "train_loss": sums["window"][0] / sums["window"][1],
                    "valid_nll": valid_nll,
                }
            )
            log(f"step {done}/{train_config.steps} loss {rows[-1]['train_loss']:.4f}")
        if logs:
            sums["window"] = [0.0, 0]
        if last:  # the closing epoch row goes into the last checkpoint with everything else
            rows.append(_epoch_row(done, epoch, tokens_per_step, sums["epoch"]))
        # A new best is checkpointed at once: its weights exist only now. Every rank takes part
        # where one may be written (the memory of all lanes is gathered), rank 0 writes.
        if checkpoints or validates:
            every_lane = [gather_rows(m, ranks) for m in mems]
            if ranks.is_main and (checkpoints or improved):
                seconds = earlier_seconds + time.perf_counter() - started
                extra = {
                    "step": done,
                    "epoch": epoch,
                    "sums": sums,
                    "best": best,
                    "seconds": seconds,
                    "world_size": ranks.world_size,
                }
                _checkpoint(run_dir, model, optimizer, every_lane, rows, extra, improved, last)
        if progress is not None and ranks.is_main:
            progress(done / train_config.steps)

    barrier(ranks)  # the others wait for rank 0's last checkpoint before anyone returns
    seconds = time.perf_counter() - started
    finished = end == train_config.steps
    return {
        "run_dir": str(run_dir),
        "steps": end,
        "finished": finished,
        "resumed_from": start,
        "tokens_trained": end * tokens_per_step,
        "seconds": seconds,
        "seconds_total": earlier_seconds + seconds,
        "tokens_per_s": (end - start) * tokens_per_step / seconds if seconds > 0 else 0.0,
        "parameters": model.num_parameters(),
        "device": str(device),
        "world_size": ranks.world_size,
        "final_train_loss": next(
            (r["train_loss"] for r in reversed(rows) if r["kind"] == "step"), None
        ),
        "best_step": best["step"] if best else None,
        "best_valid_nll": best["valid_nll"] if best else None,
    }


def _epoch_row(step: int, epoch: int, tokens_per_step: int, loss_sum: list) -> dict:
    return {
        "kind": "epoch",
        "step": step,
        "epoch": epoch,
        "tokens_seen": step * tokens_per_step,
        "lr": None,
        "train_loss": loss_sum[0] / loss_sum[1] if loss_sum[1] else None,
        "valid_nll": None,
    }


def _checkpoint(run_dir, model, optimizer, mems, rows, extra, improved, last) -> None:
    """Commit the checkpoint of a step (models.checkpoint.save_checkpoint) with the memory, the
    metrics so far and the best weights.

    `improved`: these weights are the best so far, kept as best.safetensors too. `last`: the
    run ends here, and its model.safetensors becomes the best weights."""

    def write_more(pending: Path) -> None:
        if improved:
            shutil.copyfile(pending / MODEL_FILE, pending / BEST_FILE)
        elif last:  # the last step is always validated, so a best exists
            shutil.copyfile(run_dir / BEST_FILE, pending / MODEL_FILE)
        _save_memory(pending, mems)
        _write_metrics(pending, rows)

    save_checkpoint(run_dir, model, optimizer, extra, write_more=write_more)


def rank_args(
    run_dir: str | Path,
    train_path: str | Path,
    valid_path: str | Path,
    model_config: MusicConfig,
    train_config: TrainConfig,
    compiled: bool = False,
) -> list[str]:
    """The command line `main` reads: what torchrun hands each rank of a run."""
    return [
        "--run-dir",
        str(run_dir),
        "--train",
        str(train_path),
        "--valid",
        str(valid_path),
        "--model-config",
        json.dumps(dataclasses.asdict(model_config)),
        "--train-config",
        json.dumps(dataclasses.asdict(train_config)),
        *(["--compile"] if compiled else []),
    ]


@record
def main(argv: list[str] | None = None) -> None:
    """One rank of a data-parallel run, as torchrun starts it (`models.distributed`)."""
    parser = argparse.ArgumentParser(description="Train the music model on one rank of a run.")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--train", required=True, help="tokens Parquet of the train split")
    parser.add_argument("--valid", required=True, help="tokens Parquet of the valid split")
    parser.add_argument("--model-config", required=True, type=json.loads, metavar="JSON")
    parser.add_argument("--train-config", required=True, type=json.loads, metavar="JSON")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    model_config = MusicConfig(**args.model_config)
    train_config = TrainConfig(**args.train_config)
    run_rank(
        lambda ranks, progress, log: train(
            args.run_dir,
            args.train,
            args.valid,
            model_config,
            train_config,
            progress,
            log,
            ranks=ranks,
            compiled=args.compile,
        )
    )


if __name__ == "__main__":
    main()
