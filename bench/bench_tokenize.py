"""Tokenizing chorale MIDI files in all 12 keys: this project vs MidiTok's REMI, side by side.

Both sides start from the file on disk and parse it with symusic; both produce token ids for
every key from -5 to +6 semitones. Ours quantizes once and moves pitch tokens per key (numpy);
MidiTok transposes the score (`Score.shift_pitch`) and tokenizes each key.

    .venv/bin/python bench/bench_tokenize.py [--files 100] [--repeat 3]

Needs the `bench` extra (miditok). Exports the first `--files` bundled chorales to
data/corpora/bach once (about 0.3 s each), then times only parsing and tokenizing.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from miditok import REMI, TokenizerConfig
from symusic import Score

from datasets.symbolic.augment import KEYS, transposed_tokens
from datasets.symbolic.corpus import export_bach_midi
from datasets.symbolic.midi import read_midi, read_midi_arrays
from datasets.symbolic.tokenizer import Quantized, Vocab, encode, quantize

VOCAB = Vocab()


def _quantized(notes) -> Quantized:
    return quantize(notes["onset"], notes["duration"], notes["pitch"], 4, VOCAB.max_duration)


def ours_one_key(path: Path) -> int:
    q = _quantized(read_midi_arrays(path))
    return len(encode(q.onset, q.duration, q.pitch, VOCAB)[0])


def ours_twelve_keys(path: Path) -> int:
    q = _quantized(read_midi_arrays(path))
    return sum(len(t) for _, t, _, _ in transposed_tokens(q.onset, q.duration, q.pitch, VOCAB))


def ours_twelve_keys_dataframe(path: Path) -> int:
    """The same through `read_midi`'s DataFrame, as the pipeline's parse stage reads files."""
    q = _quantized(read_midi(path))
    return sum(len(t) for _, t, _, _ in transposed_tokens(q.onset, q.duration, q.pitch, VOCAB))


def make_miditok(keys: tuple[int, ...]) -> Callable[[Path], int]:
    tokenizer = REMI(TokenizerConfig())

    def run(path: Path) -> int:
        score = Score(path)
        return sum(
            len(seq.ids) for k in keys for seq in tokenizer(score.shift_pitch(k) if k else score)
        )

    return run


def best_time(fn: Callable[[Path], int], paths: list[Path], repeat: int) -> tuple[float, float]:
    """Best of `repeat` passes over all files: (wall, CPU) seconds per file.

    CPU time (this process only) is what the work costs when other jobs share the cores.
    """
    wall = cpu = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        for path in paths:
            fn(path)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall / len(paths), cpu / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100, help="chorales to tokenize")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best one counts")
    parser.add_argument("--data-dir", default="data", help="where the chorale MIDI cache lives")
    args = parser.parse_args()
    paths = export_bach_midi(Path(args.data_dir) / "corpora" / "bach", limit=args.files)
    for path in paths:  # warm the page cache and both code paths
        ours_twelve_keys(path)
    make_miditok((0,))(paths[0])

    rows = {
        "ours, 1 key": best_time(ours_one_key, paths, args.repeat),
        "ours, 12 keys": best_time(ours_twelve_keys, paths, args.repeat),
        "ours, 12 keys, DataFrame": best_time(ours_twelve_keys_dataframe, paths, args.repeat),
        "MidiTok REMI, 1 key": best_time(make_miditok((0,)), paths, args.repeat),
        "MidiTok REMI, 12 keys": best_time(make_miditok(KEYS), paths, args.repeat),
    }
    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{len(paths)} chorale MIDI files, best of {args.repeat}; {os.cpu_count()} CPUs ({cpu})")
    print(f"load average before timing: {load}")
    print(f"{'method':<28}{'wall ms/file':>14}{'files/s':>10}{'CPU ms/file':>14}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:<28}{wall * 1e3:>14.3f}{1 / wall:>10.0f}{cpu * 1e3:>14.3f}")
    for keys in ("1 key", "12 keys"):
        theirs, ours = rows[f"MidiTok REMI, {keys}"], rows[f"ours, {keys}"]
        print(
            f"speed-up over MidiTok, {keys}: {theirs[0] / ours[0]:.1f}x wall, "
            f"{theirs[1] / ours[1]:.1f}x CPU"
        )
    wall, cpu = rows["ours, 12 keys"]
    print(
        f"parse + tokenize + 12 keys: {wall * 1e3:.3f} ms wall, {cpu * 1e3:.3f} ms CPU "
        "per chorale (target <= 1 ms)"
    )


if __name__ == "__main__":
    main()
