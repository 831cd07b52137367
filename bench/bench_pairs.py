"""Pair making: this project vs the way kuleshov/audio-super-res prepares VCTK, side by side.

The reference recipe (re-implemented from its description, not copied): `librosa.load` at the
target rate, crop to a multiple of the scale, `scipy.signal.decimate` (order-8 Chebyshev I),
cubic-spline interpolation back to full length (`scipy.interpolate.splrep`/`splev`), cut
patches with a stride, keep every patch in memory and write them to one HDF5 file (`data` =
interpolated low-res, `label` = high-res). Ours: the inventory hashed on threads, soundfile +
streamed soxr, `degrade`, the lr signal cached per file, then every Parquet shard planned from
the patch counts and cut, encoded (zstd -1) and written whole on one of the shard-writer threads
(one per core); files are renamed into place unsynced and the filesystem is synced once at the
end of the stage.

Sides run interleaved, `--repeat` times each; the table gives the median wall and CPU seconds
of each side (CPU: all threads of the process, so load from others shows in wall, not CPU).

Both read the same files: the first `--files` Bach chorales rendered by FluidSynth at
`--source-rate` (48 kHz, VCTK's rate), to pairs at 16 kHz, scale 4, patch 8192, stride 4096.
Each side runs in its own fresh process, so the peak RSS it reports is its own.

    .venv/bin/python bench/bench_pairs.py [--files 24] [--scale-up 10]

`--scale-up N` also runs our stage on a generated corpus N times larger (each chorale in N
distinct variants) to show that peak memory does not grow with the corpus.
Needs the `bench` extra (librosa, h5py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
HR_RATE, SCALE, PATCH, STRIDE = 16000, 4, 8192, 4096


def bach_corpus(data_dir: Path, files: int, rate: int) -> Path:
    """The first `files` chorales as WAVs at `rate`, rendered once under the bench directory."""
    from datasets.audio.render import render_many
    from datasets.symbolic.corpus import export_bach_midi

    midis = export_bach_midi(data_dir / "corpora" / "bach", files)
    out = data_dir / "bench" / "pairs" / f"bach_{rate}"
    missing = [m for m in midis if not (out / f"{m.stem}.wav").exists()]
    if missing:
        render_many(missing, [out / f"{m.stem}.wav" for m in missing], rate, program=0)
    return out


def scaled_corpus(source: Path, target: Path, copies: int) -> Path:
    """`copies` distinct variants of every file (gain, polarity, a shift), as 16-bit WAVs."""
    if target.exists() and len(list(target.glob("*.wav"))) == copies * len(
        list(source.glob("*.wav"))
    ):
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in sorted(source.glob("*.wav")):
        x, rate = sf.read(str(path), dtype="float32")
        for k in range(copies):
            variant = np.roll(x, 37 * k) * (0.9 - 0.05 * k) * (1 if k % 2 == 0 else -1)
            sf.write(str(target / f"{path.stem}-{k:02d}.wav"), variant, rate, "PCM_16")
    return target


def ours(corpus: Path, work: Path, workers: int = 1) -> float:
    """The data stage of flows/audio.py without Prefect, per-file work on `workers` threads
    (the flow's default runner is 2 threads); returns seconds of audio processed."""
    from concurrent.futures import ThreadPoolExecutor

    from datasets.audio.dataset import write_audio_dataset
    from datasets.audio.files import find_audio_files
    from datasets.audio.load import load_entry
    from datasets.audio.lowres import pairs_entry
    from datasets.audio.pairs import PairSpec
    from datasets.inventory import inventory
    from datasets.splits import split_pieces

    spec = PairSpec(hr_rate=HR_RATE, ratio=SCALE, patch=PATCH, stride=STRIDE, filter="soxr")
    entries = inventory(find_audio_files(corpus), corpus, 10**12)
    with ThreadPoolExecutor(workers) as pool:
        records = list(pool.map(lambda e: load_entry(e, work, HR_RATE, PATCH), entries))
        ok = [r["file_id"] for r in records if r["status"] == "ok"]
        splits = split_pieces(ok, 0, 0.1, 0.1)
        records = list(pool.map(lambda r: pairs_entry(r, work, spec), records))
    return write_audio_dataset(records, splits, work, spec)["hr_seconds"]


def kuleshov(corpus: Path, work: Path, res_type: str = "soxr_hq") -> float:
    """The reference recipe; returns seconds of audio processed. `res_type`: librosa's
    resampler; the recipe called `librosa.load(path, sr=...)`, whose default was resampy's
    `kaiser_best` when it was written (librosa 0.5) and is `soxr_hq` today."""
    import h5py
    import librosa
    from scipy import interpolate
    from scipy.signal import decimate

    work.mkdir(parents=True, exist_ok=True)
    hr_patches, lr_patches = [], []
    seconds = 0.0
    for path in sorted(corpus.glob("*.wav")):
        x, _ = librosa.load(str(path), sr=HR_RATE, res_type=res_type)
        x = x[: len(x) - len(x) % SCALE]
        seconds += len(x) / HR_RATE
        x_lr = decimate(x, SCALE)
        knots = interpolate.splrep(np.arange(len(x_lr)) * SCALE, x_lr)
        x_up = interpolate.splev(np.arange(len(x)), knots).astype(np.float32)
        for i in range(0, len(x) - PATCH + 1, STRIDE):
            hr_patches.append(x[i : i + PATCH, None])
            lr_patches.append(x_up[i : i + PATCH, None])
    with h5py.File(work / "vctk-train.h5", "w") as handle:
        handle.create_dataset("label", data=np.stack(hr_patches))
        handle.create_dataset("data", data=np.stack(lr_patches))
    return seconds


# Imported before the clock starts: the bench times pair making, not library start-up.
SIDE_IMPORTS = {
    "ours": [
        "datasets.audio.dataset",
        "datasets.audio.files",
        "datasets.inventory",
        "datasets.splits",
    ],
    "kuleshov": ["h5py", "librosa", "resampy", "scipy.interpolate", "scipy.signal"],
}


def peak_rss_mb() -> float:
    """VmHWM: this process's peak resident set. (ru_maxrss would carry the parent's peak
    across exec on Linux.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(side: str, corpus: Path, work: Path) -> None:
    """Run one side in this (fresh) process and print seconds, wall time and peak RSS."""
    side, _, option = side.partition(":")
    option = option or ("1" if side == "ours" else "soxr_hq")
    for module in SIDE_IMPORTS[side]:
        importlib.import_module(module)
    if side == "kuleshov":  # compile resampy's numba kernels before the clock starts
        librosa = importlib.import_module("librosa")
        librosa.resample(np.zeros(4800), orig_sr=48000, target_sr=16000, res_type=option)
    shutil.rmtree(work, ignore_errors=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    seconds = ours(corpus, work, int(option)) if side == "ours" else kuleshov(corpus, work, option)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(
        json.dumps({"audio_s": seconds, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak_rss_mb()})
    )


def run_child(side: str, corpus: Path, work: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, __file__, "--child", side, str(corpus), str(work)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env | {"PYTHONPATH": str(ROOT)},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


LABELS = {
    "kuleshov:kaiser_best": "kuleshov recipe as written (librosa 0.5 default: kaiser_best)",
    "kuleshov:soxr_hq": "kuleshov recipe, today's librosa default (soxr_hq)",
    "ours": "ours, files on 1 thread",
    "ours:2": "ours, files on 2 threads (the flow's default)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--files", type=int, default=24, help="chorales (the quick profile's 24)")
    parser.add_argument("--source-rate", type=int, default=48000)
    parser.add_argument("--scale-up", type=int, default=10, help="0: skip the memory run")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "CORPUS", "WORK"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    load_before = os.getloadavg()
    corpus = bach_corpus(args.data_dir, args.files, args.source_rate)
    work = args.data_dir / "bench" / "pairs" / "work"
    print(f"# pair making, {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"corpus: {args.files} chorales at {args.source_rate} Hz -> {HR_RATE} Hz, x{SCALE}")
    runs: dict[str, list[dict]] = {side: [] for side in LABELS}
    for _ in range(args.repeat):  # interleaved, so a burst of load hits every side alike
        for side in LABELS:
            runs[side].append(run_child(side, corpus, work / side))
    median = {
        side: {key: statistics.median(r[key] for r in results) for key in results[0]}
        for side, results in runs.items()
    }
    print(f"median of {args.repeat}; load average before: {load_before}, after: {os.getloadavg()}")
    print(
        "| side | audio s | wall s | CPU s | audio s per s | speed-up as written | vs today "
        "| peak RSS MB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for side, r in median.items():
        rate = r["audio_s"] / r["wall_s"]
        written = median["kuleshov:kaiser_best"]["wall_s"] / r["wall_s"]
        today = median["kuleshov:soxr_hq"]["wall_s"] / r["wall_s"]
        print(
            f"| {LABELS[side]} | {r['audio_s']:.0f} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} "
            f"| {rate:.0f} | {written:.1f}x | {today:.1f}x | {r['peak_rss_mb']:.0f} |"
        )
    if args.scale_up:
        big = scaled_corpus(
            corpus, args.data_dir / "bench" / "pairs" / f"scaled_x{args.scale_up}", args.scale_up
        )
        small = scaled_corpus(corpus, args.data_dir / "bench" / "pairs" / "scaled_x1", 1)
        print("\n| corpus (ours, files on 1 thread) | files | audio s | wall s | peak RSS MB |")
        print("| --- | --- | --- | --- | --- |")
        for name, root in (("default", small), (f"{args.scale_up}x", big)):
            r = run_child("ours", root, work / f"rss_{name}")
            n = len(list(root.glob("*.wav")))
            print(
                f"| {name} | {n} | {r['audio_s']:.0f} | {r['wall_s']:.1f} "
                f"| {r['peak_rss_mb']:.0f} |"
            )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
