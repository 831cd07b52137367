"""Super-resolution speed: the models beside the spline and sinc a user would otherwise reach for.

    .venv/bin/python -m bench.bench_superres_speed --seconds 10 --threads 1 [--model DIR ...]

Each method turns the same `seconds` of 4 kHz audio into 16 kHz once untimed (warm-up), then
`repeats` times timed; the figure is seconds of audio per second of work (x real time), by wall
time and by process CPU time (the fairer one on a shared machine: with one thread, CPU time is
what the work itself took). Models are the presets with random weights (speed does not depend on
them) unless model directories are given.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from datasets.audio.signals import sinc_upsample, spline_upsample
from models.audio.config import preset
from models.audio.infer import build_model, load_model, superresolve

RATIO = 4
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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lr = (np.random.default_rng(0).standard_normal(int(args.seconds * LOW_RATE)) * 0.1).astype(
        np.float32
    )
    n = len(lr) * RATIO
    methods: dict[str, Callable[[], object]] = {
        "spline": lambda: spline_upsample(lr, RATIO, n),
        "sinc": lambda: sinc_upsample(lr, RATIO, n),
    }
    models = {name: build_model(preset(name)).eval() for name in args.presets}
    models |= {directory: load_model(directory, "cpu") for directory in args.model}
    for name, model in models.items():
        methods[f"{name} ({model.num_parameters() / 1e6:.2f} M)"] = lambda model=model: (
            torch.inference_mode()(superresolve)(model, lr)
        )
    print(
        f"{args.seconds:g} s of {LOW_RATE} Hz audio to {LOW_RATE * RATIO} Hz, "
        f"{args.threads} thread(s), {args.repeats} repeats"
    )
    print("| method | x real time (wall) | x real time (CPU) |")
    print("| --- | ---: | ---: |")
    for name, run in methods.items():
        wall, cpu = real_time_factors(run, args.seconds, args.repeats)
        print(f"| {name} | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
