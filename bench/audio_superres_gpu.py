"""The audio super-resolution `full` profile on a lent GPU: the paper-size AudioUNet.

A lent GPU machine has PyTorch but neither FluidSynth nor its 140 MB sound font, takes at most
64 MiB of files a call and forgets everything when it is given back. So the renders made here
travel as FLAC in parts that fit one call each, the pairs are cut there with this repository's
own code, and the model is trained and evaluated there; only metrics and pictures come back.

Here (the data directory of a finished `python -m flows.audio --stages data` run):
    PYTHONPATH=. python bench/audio_superres_gpu.py pack --data-dir DATA --out .gpu
There, one call per part (the parts accumulate in --data-dir), then the run:
    PYTHONPATH=. python bench/audio_superres_gpu.py stash --part .gpu/part1 --data-dir /root/sr
    PYTHONPATH=. python bench/audio_superres_gpu.py start --data-dir /root/sr --minutes 15
    PYTHONPATH=. python bench/audio_superres_gpu.py finish --data-dir /root/sr --out "$OUT"

Test and valid files travel as 16-bit FLAC (quantization noise ~90 dB under the music). The
training files are rounded to 11 bits first, which FLAC stores in 0.52 instead of 1.09 bytes a
sample, so the whole training split fits two calls. That noise (rms 2.8e-4) sits about 30 dB
under the band above 2 kHz the model learns to restore, and no test input or reference is
touched by it.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from datasets.audio.dataset import FILES_SCHEMA
from datasets.audio.lowres import pairs_entry
from datasets.audio.pairs import PairSpec
from datasets.audio.shards import write_pair_shards
from datasets.splits import SPLITS

TRAIN_BITS = 11
VALID_FILES = 3  # enough for the 64 validation patches training logs
RUN_NAME = "full-x4-soxr-seed0"


def flac_bytes(hr: np.ndarray, rate: int, bits: int | None) -> bytes:
    """`hr` as 16-bit FLAC; rounded to `bits` first (FLAC drops the all-zero low bits)."""
    if bits is not None:
        step = 2.0 ** (1 - bits)
        hr = np.round(hr / step) * step
    buffer = io.BytesIO()
    sf.write(buffer, hr, rate, format="FLAC", subtype="PCM_16", compression_level=1.0)
    return buffer.getvalue()


def pack(data_dir: Path, out: Path, budget_mb: list[float]) -> None:
    """Write the test, the first valid and then the train files into parts of `budget_mb`."""
    files = sorted(
        pq.read_table(data_dir / "audio" / "files.parquet").to_pylist(), key=lambda r: r["file_id"]
    )
    by_split = {split: [r for r in files if r["split"] == split] for split in SPLITS}
    files = by_split["test"] + by_split["valid"][:VALID_FILES] + by_split["train"]
    part, used, rows = 0, 0, []
    for row in files:
        hr, rate = sf.read(data_dir / row["hr_path"], dtype="float32")
        blob = flac_bytes(hr, rate, TRAIN_BITS if row["split"] == "train" else None)
        if used + len(blob) > budget_mb[part] * 1e6:
            _close_part(out / f"part{part + 1}", rows)
            part, used, rows = part + 1, 0, []
            if part == len(budget_mb):
                print(f"budget full: {row['file_id']} and the files after it stay behind")
                return
        target = out / f"part{part + 1}" / "audio" / "hr" / f"{row['file_id']}.flac"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
        used += len(blob)
        rows.append(row | {"hr_path": f"audio/hr/{row['file_id']}.flac"})
    _close_part(out / f"part{part + 1}", rows)


def _close_part(part_dir: Path, rows: list[dict]) -> None:
    pq.write_table(pa.Table.from_pylist(rows, FILES_SCHEMA), part_dir / "files.parquet")
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    size = sum(f.stat().st_size for f in part_dir.rglob("*") if f.is_file()) / 1e6
    print(f"{part_dir}: {counts}, {size:.1f} MB")


def stash(part_dir: Path, data_dir: Path) -> None:
    """Merge one carried part into the data directory that outlives the call."""
    shutil.copytree(part_dir / "audio", data_dir / "audio", dirs_exist_ok=True)
    listing = data_dir / "audio" / "files.parquet"
    rows = pq.read_table(part_dir / "files.parquet").to_pylist()
    if listing.exists():
        rows = pq.read_table(listing).to_pylist() + rows
    pq.write_table(pa.Table.from_pylist(rows, FILES_SCHEMA), listing)
    print({s: sum(r["split"] == s for r in rows) for s in SPLITS})


def write_pairs(data_dir: Path) -> None:
    """The pairs of the full-profile data stage (ratio 4, soxr, patch 8192), from the FLACs."""
    spec = PairSpec(hr_rate=16000, ratio=4, filter="soxr", patch=8192, stride=8192)
    files = pq.read_table(data_dir / "audio" / "files.parquet").to_pylist()
    for split in SPLITS:
        records = [
            pairs_entry(r | {"status": "ok", "load_key": r["file_id"]}, data_dir, spec)
            for r in files
            if r["split"] == split
        ]
        shards = write_pair_shards(records, split, data_dir, spec)
        print(
            f"{split}: {len(records)} files, {sum(r['n_patches'] for r in records)} pairs, "
            f"{len(shards)} shards",
            flush=True,
        )


def seconds_per_step(batches: int = 12) -> float:
    """Time training steps of the GPU `full` config on random patches (data loading included
    through `model_inputs`, the spline the loop runs on the CPU)."""
    import torch

    from models.audio.config import preset, profile_config
    from models.audio.data import model_inputs
    from models.audio.unet import AudioUNet

    config = profile_config("full", 0)
    model = AudioUNet(preset(config.preset, ratio=4, hr_rate=16000, patch=8192)).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = np.random.default_rng(0)
    lr = rng.standard_normal((config.batch_size, 2048)).astype(np.float32) * 0.05
    hr = rng.standard_normal((config.batch_size, 1, 8192)).astype(np.float32) * 0.05
    for index in range(batches + 3):
        if index == 3:
            torch.cuda.synchronize()
            started = time.perf_counter()
        x = torch.from_numpy(model_inputs(lr, 4, 8192)[:, None, :]).cuda()
        loss = torch.mean((model(x) - torch.from_numpy(hr).cuda()) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / batches


def start(data_dir: Path, minutes: float) -> None:
    """Cut the pairs, size the run to `minutes` of training and start it in its own session
    (it outlives this call; `finish` waits for it)."""
    write_pairs(data_dir)
    per_step = seconds_per_step()
    steps = int(minutes * 60 / per_step / 100) * 100
    print(f"{per_step * 1000:.0f} ms a step -> {steps} steps", flush=True)
    with open(data_dir / "train.log", "w") as log:  # the child keeps its own copy of the fd
        subprocess.Popen(
            [sys.executable, __file__, "train", "--data-dir", str(data_dir), "--steps", str(steps)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def train(data_dir: Path, steps: int) -> None:
    from models.audio.config import profile_config
    from models.audio.train import train_audio_unet

    config = profile_config("full", 0, steps=steps)
    print(
        json.dumps(
            train_audio_unet(
                data_dir / "audio" / "pairs", data_dir / "models" / "audio" / RUN_NAME, config
            )
        ),
        flush=True,
    )


def finish(data_dir: Path, out: Path, wait_s: float) -> None:
    """Wait (up to `wait_s`) for the run; then evaluate it on every test file."""
    from models.audio.evaluate import evaluate_run, side_by_side, write_examples

    run_dir = data_dir / "models" / "audio" / RUN_NAME
    deadline = time.monotonic() + wait_s
    while not (run_dir / "train.json").exists() and time.monotonic() < deadline:
        time.sleep(10)
    print((data_dir / "train.log").read_text()[-3000:], flush=True)
    if (run_dir / "metrics.parquet").exists():
        shutil.copy(run_dir / "metrics.parquet", out / "train_metrics.parquet")
        for row in pq.read_table(run_dir / "metrics.parquet").to_pylist():
            print(row, flush=True)
    if not (run_dir / "train.json").exists():
        print("still training", flush=True)
        return
    started = time.perf_counter()
    metrics = evaluate_run(run_dir, data_dir, "test")
    print(f"evaluation {time.perf_counter() - started:.0f} s", flush=True)
    for row in side_by_side(metrics):
        print(row, flush=True)
    shutil.copy(run_dir / "metrics.json", out / "metrics.json")
    for example in write_examples(run_dir, data_dir, data_dir / "reports", 1):
        shutil.copy(example["png"], out / Path(example["png"]).name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-mb", type=float, nargs="+", default=[58.0, 60.0])
    p = sub.add_parser("stash")
    p.add_argument("--part", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p = sub.add_parser("start")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=15.0)
    p = sub.add_parser("train")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--steps", type=int, required=True)
    p = sub.add_parser("finish")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--wait-s", type=float, default=540.0)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.data_dir, args.out, args.budget_mb)
    elif args.command == "stash":
        stash(args.part, args.data_dir)
    elif args.command == "start":
        start(args.data_dir, args.minutes)
    elif args.command == "train":
        train(args.data_dir, args.steps)
    else:
        finish(args.data_dir, args.out, args.wait_s)


if __name__ == "__main__":
    main()
