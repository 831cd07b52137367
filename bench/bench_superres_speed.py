"""Super-resolution speed: the models beside the spline and sinc a user would otherwise reach for.

    .venv/bin/python -m bench.bench_superres_speed --seconds 10 --threads 1 [--model DIR ...]
        [--input-rate 8000] [--audio FILE ...]

Each method turns the same `seconds` of 4 kHz audio into 16 kHz once untimed (warm-up), then
`repeats` times timed; the figure is seconds of audio per second of work (x real time), by wall
time and by process CPU time (the fairer one on a shared machine: with one thread, CPU time is
what the work itself took). Models are the presets with random weights (speed does not depend on
them) unless model directories are given. With `--input-rate 8000` the input is 8 kHz audio:
the models keep its band and fill the one above (`superresolve_wide`), beside the spline, the
sinc and soxr's resampler at that ratio. The input is white noise, or with `--audio` each file's
first `seconds` in turn (one table each): the gated model's cost depends on what it hears, since
its U-Net runs only where its gate opens (`models.audio.gated`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import soxr
import torch

from datasets.audio.files import load_audio
from datasets.audio.signals import sinc_upsample, spline_upsample
from models.audio.config import preset
from models.audio.infer import build_model, load_model, superresolve, superresolve_wide

HIGH_RATE = 16000
LOW_RATE = 4000


def real_time_factors(
    run: Callable[[], object], seconds: float, repeats: int
) -> tuple[float, float]:
    run()  # warm-up: first-call allocations and lazy imports are not the method's speed
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        run()
    return (
        seconds * repeats / (time.perf_counter() - wall),
        seconds * repeats / (time.process_time() - cpu),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--presets", nargs="*", default=["full", "bwe-quick", "bwe-full"])
    parser.add_argument("--model", nargs="*", default=[], help="trained model directories")
    parser.add_argument("--input-rate", type=int, default=LOW_RATE, choices=[LOW_RATE, 8000])
    parser.add_argument("--audio", nargs="*", default=[], help="audio files (default: noise)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rate = args.input_rate
    samples = int(args.seconds * rate)
    inputs = {path: load_audio(path, rate)[:samples] for path in args.audio} or {
        "white noise": (np.random.default_rng(0).standard_normal(samples) * 0.1).astype(np.float32)
    }
    models = {name: build_model(preset(name)).eval() for name in args.presets}
    models |= {directory: load_model(directory, "cpu") for directory in args.model}
    for name, audio in inputs.items():
        bench_input(name, audio, rate, models, args.threads, args.repeats)


def bench_input(
    name: str,
    audio: np.ndarray,
    rate: int,
    models: dict[str, torch.nn.Module],
    threads: int,
    repeats: int,
) -> None:
    """Print the table of every method on one input."""
    ratio = HIGH_RATE // rate
    seconds = len(audio) / rate
    n = len(audio) * ratio
    methods: dict[str, Callable[[], object]] = {
        "spline": lambda: spline_upsample(audio, ratio, n),
        "sinc": lambda: sinc_upsample(audio, ratio, n),
    }
    if rate != LOW_RATE:
        methods["soxr HQ"] = lambda: soxr.resample(audio, rate, HIGH_RATE, "HQ")

    def model_output(model: torch.nn.Module) -> object:
        if rate == LOW_RATE:
            return superresolve(model, audio)
        return superresolve_wide(model, audio, rate)

    for label, model in models.items():
        parameters = sum(p.numel() for p in model.parameters())
        methods[f"{label} ({parameters / 1e6:.2f} M)"] = lambda model=model: torch.inference_mode()(
            model_output
        )(model)
    print(
        f"{name}: {seconds:g} s of {rate} Hz audio to {HIGH_RATE} Hz, "
        f"{threads} thread(s), {repeats} repeats"
    )
    print("| method | x real time (wall) | x real time (CPU) |")
    print("| --- | ---: | ---: |")
    for label, run in methods.items():
        wall, cpu = real_time_factors(run, seconds, repeats)
        print(f"| {label} | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
