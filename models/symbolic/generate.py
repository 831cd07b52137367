"""Continuing a prompt with the music Transformer: cached, grammar-constrained sampling.

Each new token costs one `MusicTransformer.step` over the key/value cache, not a pass over the
whole context. Before sampling, tokens the grammar forbids
(`datasets.symbolic.tokenizer.grammar_mask`) get probability zero, and a sequence cut off by
`length` is closed with a duration and eos, so every output decodes to notes: every note has a
duration and time only moves forward. `generate` is the whole job: load a run's model, pick the
prompt, continue it and write the MIDI and piano roll.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import torch

from datasets.io import write_bytes_atomic
from datasets.symbolic.midi import read_midi, write_midi
from datasets.symbolic.musicality import continuation_musicality
from datasets.symbolic.tokenizer import (
    Vocab,
    bar_steps,
    decode,
    encode,
    grammar_mask,
    quantize,
)
from models.symbolic.ngram import NGram
from models.symbolic.transformer import KVCache, MusicTransformer

# Pachelbel's Canon in D, bars 1-4 as a built-in prompt: the ground bass (two bars, played
# twice) under the first violin's opening half notes. (onset beat, duration beats, MIDI pitch)
PACHELBEL_BASS = [50, 45, 47, 42, 43, 38, 43, 45]  # D A B F# G D G A, one per beat
PACHELBEL_MELODY = [78, 76, 74, 73, 71, 69, 71, 73]  # F# E D C# B A B C#, one per two beats
PACHELBEL_BAR_BEATS = 4


def pachelbel_notes() -> pd.DataFrame:
    bass = [(float(i), 1.0, p) for i, p in enumerate(PACHELBEL_BASS * 2)]
    melody = [(2.0 * i, 2.0, p) for i, p in enumerate(PACHELBEL_MELODY)]
    onset, duration, pitch = zip(*(bass + melody), strict=True)
    return pd.DataFrame({"onset": onset, "duration": duration, "pitch": pitch})


@dataclass(frozen=True)
class Prompt:
    tokens: np.ndarray  # bos, then whole notes groups; no eos
    beats: np.ndarray
    bar_steps: int
    name: str
    tempo_bpm: float = 100.0  # what the continuation is written at (a MIDI prompt's own)


def prompt_from_notes(
    notes: pd.DataFrame, vocab: Vocab, bars: int, bar_steps: int, name: str
) -> Prompt:
    """The first `bars` bars of a note table (onset/duration in beats) as prompt tokens."""
    q = quantize(notes["onset"], notes["duration"], notes["pitch"], vocab.steps_per_beat)
    tokens, beats = encode(q.onset, q.duration, q.pitch, vocab)
    return cut_prompt(tokens, beats, bars * bar_steps, bar_steps, name)


def cut_prompt(
    tokens: np.ndarray, beats: np.ndarray, limit: int, bar_steps: int, name: str
) -> Prompt:
    """Keep the tokens standing before grid step `limit` (whole note groups), drop any eos."""
    tokens, beats = np.asarray(tokens, dtype=np.int64), np.asarray(beats, dtype=np.int64)
    keep = (beats < limit) & (tokens != Vocab.eos)
    keep[0] = True  # bos
    if not keep[1:].any():
        raise ValueError(f"prompt {name}: no notes in its first {limit} grid steps")
    return Prompt(tokens[keep], beats[keep], bar_steps, name)


def read_midi_piece(path: str | Path, vocab: Vocab) -> Prompt:
    """A whole MIDI file's pitched notes as tokens (drum hits left out: the models never saw
    them), on the grid of its first time signature, with its first tempo."""
    path = Path(path)
    notes = read_midi(path)
    pitched = notes[~notes["is_drum"].to_numpy(dtype=bool)]
    if pitched.empty:
        raise ValueError(f"prompt {path}: only drum notes, nothing pitched to continue")
    ts_num, ts_den = int(notes["ts_num"].iloc[0]), int(notes["ts_den"].iloc[0])
    q = quantize(pitched["onset"], pitched["duration"], pitched["pitch"], vocab.steps_per_beat)
    tokens, beats = encode(q.onset, q.duration, q.pitch, vocab)
    bar = bar_steps(ts_num, ts_den, vocab.steps_per_beat)
    return Prompt(tokens, beats, bar, path.stem, tempo_bpm=float(notes["tempo"].iloc[0]))


def load_prompt(prompt: str, vocab: Vocab, bars: int, tokens_dir: str | Path | None) -> Prompt:
    """`prompt` is "pachelbel", a MIDI file path, or a piece id in the tokens dataset."""
    if prompt == "pachelbel":
        bar = PACHELBEL_BAR_BEATS * vocab.steps_per_beat
        return prompt_from_notes(pachelbel_notes(), vocab, bars, bar, "pachelbel")
    path = Path(prompt)
    if path.suffix.lower() in (".mid", ".midi"):
        whole = read_midi_piece(path, vocab)
        chosen = cut_prompt(
            whole.tokens, whole.beats, bars * whole.bar_steps, whole.bar_steps, whole.name
        )
        return dataclasses.replace(chosen, tempo_bpm=whole.tempo_bpm)
    if tokens_dir is None:
        raise ValueError(f"prompt {prompt!r} is not a MIDI file and no tokens dataset was given")
    table = (
        ds.dataset(str(tokens_dir), format="parquet")
        .filter((ds.field("piece_id") == prompt) & (ds.field("transpose") == 0))
        .to_table(columns=["tokens", "beats", "bar_steps"])
    )
    if table.num_rows == 0:
        raise ValueError(f"prompt {prompt!r}: no such piece id (transpose 0) in {tokens_dir}")
    row = table.slice(0, 1).to_pylist()[0]
    bar = int(row["bar_steps"])
    return cut_prompt(np.array(row["tokens"]), np.array(row["beats"]), bars * bar, bar, prompt)


def filter_logits(
    logits: torch.Tensor, allowed: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> torch.Tensor:
    """Probabilities over the allowed tokens after temperature, top-k and top-p (nucleus)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = logits.float().masked_fill(~allowed, float("-inf")) / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, int(allowed.sum()))).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest set whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        probs = probs / probs.sum()
    return probs


class GrammarState:
    """Where a growing sequence stands: previous token, the group's last pitch, the time."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.previous = vocab.bos
        self.time = 0
        self.last_pitch: int | None = None

    def allowed(self) -> np.ndarray:
        return grammar_mask(self.vocab, self.previous, self.last_pitch)

    def advance(self, token: int) -> int:
        """Take `token`; returns its beat (the time cursor after reading it)."""
        kind = self.vocab.kind_of(token)
        if kind == "shift":
            self.time += token - self.vocab.shift_offset + 1
            self.last_pitch = None
        elif kind == "pitch":
            self.last_pitch = token - self.vocab.pitch_offset
        self.previous = token
        return self.time


# Gives the next token's logits after taking in the new tokens and their beats.
Feeder = Callable[[list[int], list[int]], torch.Tensor]


def transformer_feeder(model: MusicTransformer, bar_steps: int) -> Feeder:
    """The model over a growing key/value cache: each call costs one step for the new tokens.
    A model with learned absolute positions (the vanilla baseline) knows only `seg_len` of
    them, so it reads a sliding window of its last `seg_len` tokens instead."""
    model.eval()
    device = next(model.parameters()).device
    cache = model.new_cache()
    history: tuple[list[int], list[int]] = ([], [])

    def run(tokens: list[int], beats: list[int], on: KVCache) -> torch.Tensor:
        t = torch.tensor([tokens], device=device)
        b = torch.tensor([beats], device=device)
        return model.step(t, b, torch.full_like(t, bar_steps), on)[0, -1]

    def feed(new_tokens: list[int], new_beats: list[int]) -> torch.Tensor:
        if model.config.relative:
            return run(new_tokens, new_beats, cache)
        history[0].extend(new_tokens)
        history[1].extend(new_beats)
        window = model.config.seg_len
        return run(history[0][-window:], history[1][-window:], model.new_cache())

    return feed


def ngram_feeder(ngram: NGram) -> Feeder:
    """The n-gram baseline's log-probabilities, so it samples through the same loop."""
    history: list[int] = []

    def feed(new_tokens: list[int], new_beats: list[int]) -> torch.Tensor:
        history.extend(new_tokens)
        context = tuple(history[len(history) - ngram.order + 1 :]) if ngram.order > 1 else ()
        return torch.from_numpy(np.log(ngram.distribution(context)))

    return feed


@torch.no_grad()
def sample_continuation(
    feed: Feeder,
    vocab: Vocab,
    prompt: Prompt,
    length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    until_step: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Prompt + `length` sampled tokens (one more if the last is a pitch, for its duration)
    + eos, as (tokens, beats); always decodable. eos is held back until `length` tokens.
    With `until_step`, sampling also stops once time reaches that grid step."""
    state = GrammarState(vocab)
    for token in prompt.tokens[1:]:
        state.advance(int(token))
    tokens, beats = list(map(int, prompt.tokens)), list(map(int, prompt.beats))
    logits = feed(tokens, beats)
    for produced in range(length + 1):
        group_open = vocab.kind_of(state.previous) == "pitch"
        if until_step is not None and state.time >= until_step and not group_open:
            break
        allowed = state.allowed()
        if produced < length:
            allowed[vocab.eos] = False  # the user asked for `length` tokens: no early end
        elif not group_open:
            break
        # (at `length`, a cut-off pitch still gets its duration below)
        mask = torch.from_numpy(allowed).to(logits.device)
        probs = filter_logits(logits, mask, temperature, top_k, top_p)
        token = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        beat = state.advance(token)
        tokens.append(token)
        beats.append(beat)
        if produced == length:
            break
        logits = feed([token], [beat])
    if tokens[-1] != vocab.eos:
        tokens.append(vocab.eos)
        beats.append(state.time)
    return np.array(tokens, dtype=np.int32), np.array(beats, dtype=np.int32)


def tokens_to_notes(tokens: np.ndarray, vocab: Vocab, beats_per_bar: int = 4) -> pd.DataFrame:
    """Decoded tokens as a note table (pitched notes, one time signature of `beats_per_bar`
    quarter notes), enough for MIDI, the piano roll and the musicality figures."""
    onset, duration, pitch = decode(tokens, vocab)
    return pd.DataFrame(
        {
            "onset": onset / vocab.steps_per_beat,
            "duration": duration / vocab.steps_per_beat,
            "pitch": pitch,
            "is_drum": False,
            "ts_num": beats_per_bar,
            "ts_den": 4,
        }
    )


def write_piano_roll(notes: pd.DataFrame, path: str | Path, n_prompt: int, title: str) -> Path:
    """A piano-roll PNG: the first `n_prompt` notes (the prompt) grey, the rest blue."""
    # Imported here: only this report needs matplotlib, and it is slow to import.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4), dpi=100)
    for index, row in enumerate(notes.itertuples()):
        color = "0.55" if index < n_prompt else "tab:blue"
        ax.broken_barh([(row.onset, row.duration)], (row.pitch - 0.4, 0.8), color=color)
    ax.set_xlabel("beats")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title)
    return write_figure(fig, path)


def write_figure(fig: Any, path: str | Path) -> Path:
    """A matplotlib figure as a PNG, atomically, without a timestamp (same plot, same bytes);
    the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def write_outputs(
    tokens: np.ndarray, vocab: Vocab, prompt: Prompt, out_stem: str | Path
) -> dict[str, Any]:
    """The continuation as `<stem>.mid` and a piano roll `<stem>.png`; returns paths, counts
    and the musicality of the continuation beside its prompt's (`musicality`)."""
    beats_per_bar = max(1, round(prompt.bar_steps / vocab.steps_per_beat))
    notes = tokens_to_notes(tokens, vocab, beats_per_bar)
    # Decoding sorts by (onset, pitch) and generated notes never come before the prompt's
    # (time only moves forward, a group's added pitches go up), so the prompt's notes lead.
    n_prompt = len(tokens_to_notes(prompt.tokens, vocab))
    midi = write_midi(notes, f"{out_stem}.mid", tempo_bpm=prompt.tempo_bpm)
    png = write_piano_roll(notes, f"{out_stem}.png", n_prompt, Path(out_stem).name)
    prompt_bars = prompt.beats[-1] // prompt.bar_steps + 1 if len(prompt.beats) else 0
    continuation_start = prompt_bars * beats_per_bar  # the bar after the prompt's last
    continuation = notes.iloc[n_prompt:].assign(onset=lambda t: t.onset - continuation_start)
    figures = continuation_musicality(notes.iloc[:n_prompt], continuation[continuation.onset >= 0])
    return {
        "midi": str(midi),
        "png": str(png),
        "notes": len(notes),
        "prompt_notes": n_prompt,
        "tokens": len(tokens),
        # None where a figure is undefined (NaN): results and stamps are strict JSON.
        "musicality": {k: None if math.isnan(v) else round(v, 4) for k, v in figures.items()},
    }


def generate(
    run_dir: str | Path,
    vocab: Vocab,
    tokens_dir: str | Path | None,
    reports_dir: str | Path,
    prompt: str,
    prompt_bars: int,
    length: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int,
) -> dict[str, Any]:
    """Continue `prompt` (see `load_prompt`) with the model of `run_dir`, seeded; writes
    `<reports_dir>/<run>-<prompt>-seed<seed>.mid` and `.png` (`write_outputs`). The sampling
    defaults are the caller's (the task's and the flow's parameters)."""
    model = MusicTransformer.load(run_dir)
    chosen = load_prompt(prompt, vocab, prompt_bars, tokens_dir)
    generator = torch.Generator().manual_seed(seed)
    feed = transformer_feeder(model, chosen.bar_steps)
    tokens, _ = sample_continuation(
        feed, vocab, chosen, length, temperature, top_k, top_p, generator
    )
    stem = Path(reports_dir) / f"{Path(run_dir).name}-{chosen.name}-seed{seed}"
    return write_outputs(tokens, vocab, chosen, stem)
