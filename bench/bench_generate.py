"""Generation speed with and without the key/value cache, at a fixed context length.

    .venv/bin/python -m bench.bench_generate --contexts 512 2048 --threads 1

With the cache each new token is one `MusicTransformer.step` over cached keys and values; without
it, each new token is a full forward pass over the last `context` tokens (what a model without a
cache must do). The model is the `full` preset with its memory sized so that its attention span
equals the context; weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from models.symbolic.config import MusicConfig
from models.symbolic.transformer import MusicTransformer

VOCAB_SIZE = 259  # the default symbolic vocabulary (datasets.symbolic.tokenizer.Vocab())


def rates(run: Callable[[], None], tokens: int) -> tuple[float, float]:
    """Tokens per second of wall time and of process CPU time (the fairer figure on a shared
    machine: with one thread, CPU time is the time the work itself took)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return tokens / (time.perf_counter() - wall), tokens / (time.process_time() - cpu)


def model_for(context: int, preset: str) -> MusicTransformer:
    base = MusicConfig.preset(preset, VOCAB_SIZE)
    config = MusicConfig.preset(preset, VOCAB_SIZE, mem_len=context - base.seg_len)
    return MusicTransformer(config, torch.Generator().manual_seed(0)).eval()


@torch.no_grad()
def cached_rate(
    model: MusicTransformer, prompt: torch.Tensor, new_tokens: int
) -> tuple[float, float]:
    beats = torch.zeros_like(prompt)
    bars = torch.full_like(prompt, 16)
    cache = model.new_cache()
    logits = model.step(prompt, beats, bars, cache)[:, -1]  # the prompt, not timed
    one = torch.zeros(1, 1, dtype=torch.long)

    def run() -> None:
        nonlocal logits
        for _ in range(new_tokens):
            token = logits.argmax(-1, keepdim=True)
            logits = model.step(token, one, one + 16, cache)[:, -1]

    return rates(run, new_tokens)


@torch.no_grad()
def uncached_rate(
    model: MusicTransformer, prompt: torch.Tensor, new_tokens: int
) -> tuple[float, float]:
    context = prompt.shape[1]
    beats = torch.zeros_like(prompt)
    bars = torch.full_like(prompt, 16)

    def run() -> None:
        tokens = prompt
        for _ in range(new_tokens):
            logits, _ = model(tokens[:, -context:], beats, bars)
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)

    return rates(run, new_tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--preset", default="full")
    parser.add_argument("--cached-tokens", type=int, default=64)
    parser.add_argument("--uncached-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"preset {args.preset}, {args.threads} thread(s)")
    print("tokens/s per wall-clock second (per CPU second)")
    print("| context | with cache | without cache | speed-up (CPU time) |")
    print("| ---: | ---: | ---: | ---: |")
    for context in args.contexts:
        model = model_for(context, args.preset)
        prompt = torch.randint(3, VOCAB_SIZE, (1, context), generator=torch.Generator())
        wall, cpu = cached_rate(model, prompt, args.cached_tokens)
        wall0, cpu0 = uncached_rate(model, prompt, args.uncached_tokens)
        print(
            f"| {context} | {wall:.1f} ({cpu:.1f}) | {wall0:.2f} ({cpu0:.2f}) "
            f"| {wall / wall0:.0f}x ({cpu / cpu0:.0f}x) |"
        )


if __name__ == "__main__":
    main()
