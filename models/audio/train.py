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

Under torchrun (`python -m models.audio.train`, started by the train task for more than one
process) the run is data-parallel (`models.distributed`): every rank draws the same global
batches and trains on its own rows of each; rank 0 evaluates and writes.
"""

from __future__ import annotations

import argparse
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
from torch.distributed.elastic.multiprocessing.errors import record

from datasets.audio.dataset import file_parts
from datasets.io import sha256_file, write_json_atomic, write_parquet_atomic
from models.audio.config import (
    AudioModelConfig,
    AudioTrainConfig,
    BWEConfig,
    model_config_class,
    preset,
)
from models.audio.data import (
    batches_per_epoch,
    iter_epoch,
    iter_mixed_epoch,
    load_eval_set,
    model_inputs,
    pair_shards,
    part_rows,
    read_pairs_info,
)
from models.audio.gated import GatedExtender
from models.audio.infer import build_model, load_model, load_model_config, predict_patches
from models.audio.losses import relative_mse, stft_loss
from models.audio.metrics import snr_db
from models.checkpoint import (
    MODEL_FILE,
    STATE_JSON_FILE,
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_model,
)
from models.distributed import (
    Ranks,
    barrier,
    check_batch,
    differentiable_sum,
    mean_over_ranks,
    own_rows,
    rank_device,
    resumable,
    run_rank,
    wrap_model,
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


def trained_world_size(run_dir: str | Path) -> int | None:
    """How many processes trained the last steps of the run in `run_dir` (runs from before
    data-parallel training were one); None for a model directory without its checkpoint (a
    shipped model: its model card says)."""
    if not has_checkpoint(Path(run_dir) / CHECKPOINT_DIR):
        return None
    return int(_checkpoint_extra(run_dir).get("world_size", 1))


def parameter_shapes(config: AudioModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every weight of the model `config` describes."""
    model = build_model(config, torch.Generator())  # its own generator: the global one is left
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def started_from_config(
    config: AudioTrainConfig, model_config: AudioModelConfig
) -> AudioModelConfig:
    """The model a run started from `config.init_from` trains: that model's config at its
    trained settings (a calibrated one's inference settings reset), if it is the architecture
    `config.preset` names."""
    if isinstance(model_config, BWEConfig) != config.preset.startswith("bwe-"):
        kind = "spectral (--arch bwe)" if isinstance(model_config, BWEConfig) else "U-Net"
        raise ValueError(
            f"{config.init_from}: a {kind} model cannot start a run of preset {config.preset!r}; "
            "train it as its own architecture"
        )
    return model_config.as_trained() if isinstance(model_config, BWEConfig) else model_config


def start_digest(directory: str | Path) -> str:
    """The sha256 of the weights a run starts from (`AudioTrainConfig.init_from`), once they
    load as a model: a broken directory is refused here, naming the file."""
    load_model(directory, "cpu")
    return sha256_file(Path(directory) / MODEL_FILE)


def train_audio_unet(
    pairs_dir: str | Path,
    run_dir: str | Path,
    config: AudioTrainConfig,
    model_config: AudioModelConfig | None = None,
    progress: Callable[[float], None] | None = None,
    device: str | None = None,
    ranks: Ranks = Ranks(),
    compiled: bool = False,
) -> dict[str, Any]:
    """Train (or resume training) a model on `pairs_dir`; write the run into `run_dir`.

    `model_config` defaults to the preset named in `config`, with ratio, hr_rate and patch taken
    from the pairs dataset; with `config.init_from` it is that model's, and its weights start
    the run (`started_from_config`). `ranks`: this process's place in a data-parallel run
    (module doc); `compiled`: train through `torch.compile`. Returns a small summary record.
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    info = read_pairs_info(pairs_dir)
    shards = pair_shards(pairs_dir, "train")
    # The pairs live in <data_dir>/audio/pairs, beside the files table that names each part.
    part_index = (
        None
        if config.part_exponent is None and config.parts is None
        else part_rows(shards, file_parts(Path(pairs_dir).parents[1]))
    )
    if part_index is not None and config.parts is not None:
        if missing := sorted(set(config.parts) - set(part_index)):
            raise ValueError(
                f"{pairs_dir}: no training patches of the parts {missing}; its parts are "
                f"{sorted(part_index)}"
            )
        part_index = {part: part_index[part] for part in config.parts}
    check_batch(config.batch_size, ranks)
    device = torch.device(device) if device else rank_device(ranks)
    generator = torch.Generator().manual_seed(config.seed)

    checkpoint = run_dir / CHECKPOINT_DIR
    # A checkpoint a kill interrupted is completed or discarded; a whole one is resumed from.
    resuming = resumable(checkpoint, ranks)
    started_from = None if config.init_from is None else load_model(config.init_from, "cpu")
    if isinstance(started_from, GatedExtender):  # the network of the run's architecture
        started_from = (
            started_from.spectral if config.preset.startswith("bwe-") else started_from.unet
        )
    if started_from is not None:
        wanted = started_from_config(config, started_from.config)
    else:
        wanted = model_config or preset(
            config.preset, ratio=info.ratio, hr_rate=info.hr_rate, patch=info.patch
        )
    resumed = load_model_config(checkpoint) if resuming else None
    if resumed is not None and parameter_shapes(resumed) != parameter_shapes(wanted):
        # A checkpoint of a model of another size (its preset has changed since) would go on
        # training the old model to the new schedule: the run starts over instead.
        resuming, resumed = False, None
    model_config = resumed or wanted
    if config.keep_below is not None:
        if isinstance(model_config, BWEConfig):
            raise ValueError(
                "keep_below for a run is the U-Net's; the spectral model's is its preset's"
            )
        model_config = dataclasses.replace(model_config, keep_below=config.keep_below)
    if (
        model_config.ratio != info.ratio
        or model_config.hr_rate != info.hr_rate
        or info.patch % model_config.multiple
    ):
        raise ValueError(
            f"{pairs_dir}: pairs at {info.hr_rate} Hz, ratio {info.ratio}, with patch "
            f"{info.patch} do not fit a model for {model_config.hr_rate} Hz, ratio "
            f"{model_config.ratio}, needing lengths divisible by {model_config.multiple}"
        )
    model_config = dataclasses.replace(model_config, patch=info.patch)
    # On the device before the optimizer exists: loaded Adam state follows its parameters.
    model = build_model(model_config, generator=generator)
    if started_from is not None and not resuming:
        model.load_state_dict(started_from.state_dict())
    model = model.to(device)
    fused = True if device.type == "cuda" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999), fused=fused)

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
    trained = wrap_model(model, ranks)
    if compiled:  # after DDP's wrapper, as PyTorch advises: it compiles between its buckets
        trained = torch.compile(trained)
    over_ranks = differentiable_sum(ranks)

    eval_hr, eval_input = load_eval_set(pairs_dir, config.eval_split, config.eval_patches, info)
    spline_snr = snr_db(eval_hr, eval_input)
    model.train()
    while step < config.steps:
        if part_index is None:
            batches = iter_epoch(shards, config.batch_size, config.seed, epoch)
        else:
            batches = iter_mixed_epoch(
                part_index,
                config.batch_size,
                config.seed,
                epoch,
                1.0 if config.part_exponent is None else config.part_exponent,
            )
        for index, (hr, lr) in enumerate(batches):
            if index < batch_in_epoch:
                continue
            hr, lr = own_rows(hr, ranks), own_rows(lr, ranks)
            x = torch.from_numpy(model_inputs(lr, info.ratio, hr.shape[1])[:, None, :])
            y = torch.from_numpy(hr[:, None, :])
            x, y = x.to(device), y.to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            # bf16 on a GPU; a CPU without native bf16 would emulate it at several times the
            # cost, so there it is fp32.
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                estimate = trained(x, generator=generator if device.type == "cpu" else None)
            estimate = estimate.float()
            mse = torch.mean((estimate - y) ** 2)
            loss = relative_mse(estimate, y) if config.relative_mse else mse
            if config.stft_weight:
                spectral = stft_loss(estimate[:, 0], y[:, 0], over_ranks=over_ranks)
                loss = loss + config.stft_weight * spectral
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            batch_in_epoch = index + 1
            loss_value, mse_value = mean_over_ranks([loss.item(), mse.item()], ranks)
            losses.append(loss_value)
            mses.append(mse_value)
            if step % config.log_every == 0 or step == config.steps:
                if ranks.is_main:
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
                    _write_metrics(run_dir, rows)
                losses, mses = [], []
            if ranks.is_main and (step % config.checkpoint_every == 0 or step == config.steps):
                extra = {
                    "step": step,
                    "epoch": epoch,
                    "batch_in_epoch": batch_in_epoch,
                    "losses": losses,
                    "mses": mses,
                    "seconds": earlier_seconds + time.perf_counter() - started,
                    "world_size": ranks.world_size,
                }
                save_checkpoint(checkpoint, model, optimizer, extra, generator)
            if progress is not None and ranks.is_main:
                progress(step / config.steps)
            if step >= config.steps:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0

    # Whole epochs trained: from the counters the checkpoint holds, so a run resumed from its
    # last checkpoint reports (and stamps) the same number as an uninterrupted one.
    epochs = epoch + int(batch_in_epoch >= batches_per_epoch(shards, config.batch_size))
    if ranks.is_main:
        save_model(run_dir, model, model_config)
        write_json_atomic(
            run_dir / TRAIN_JSON,
            {"config": dataclasses.asdict(config), "pairs": dataclasses.asdict(info)},
        )
    barrier(ranks)  # the others wait for rank 0's model before anyone returns
    last = rows[-1] if rows else {}
    return {
        "run_dir": str(run_dir),
        "steps": step,
        "epochs": epochs,
        "parameters": model.num_parameters(),
        "final_mse": last.get("mse", math.nan),
        "eval_snr_db": last.get("eval_snr_db", math.nan),
        "eval_spline_snr_db": spline_snr,
        "world_size": ranks.world_size,
        "seconds": round(time.perf_counter() - started, 1),
    }


def rank_args(
    pairs_dir: str | Path, run_dir: str | Path, config: AudioTrainConfig, compiled: bool = False
) -> list[str]:
    """The command line `main` reads: what torchrun hands each rank of a run."""
    return [
        "--pairs-dir",
        str(pairs_dir),
        "--run-dir",
        str(run_dir),
        "--config",
        json.dumps(dataclasses.asdict(config)),
        *(["--compile"] if compiled else []),
    ]


@record
def main(argv: list[str] | None = None) -> None:
    """One rank of a data-parallel run, as torchrun starts it (`models.distributed`)."""
    parser = argparse.ArgumentParser(description="Train an audio model on one rank of a run.")
    parser.add_argument("--pairs-dir", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--config", required=True, type=json.loads, metavar="JSON")
    parser.add_argument("--model-config", type=json.loads, metavar="JSON")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    model_config = None
    if args.model_config is not None:
        model_config = model_config_class(args.model_config)(**args.model_config)
    config = AudioTrainConfig(**args.config)
    run_rank(
        lambda ranks, progress, log: train_audio_unet(
            args.pairs_dir, args.run_dir, config, model_config, progress, None, ranks, args.compile
        )
    )


if __name__ == "__main__":
    main()
