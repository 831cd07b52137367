"""Musicality of continuations of held-out prompts: the model beside the music itself.

NLL says how well a model predicts the next token; it does not say whether what it writes
stays in the key and the texture it was given. The study takes the opening bars of test pieces
(untransposed; whole pieces the model never trained on) as prompts, lets each model continue
them for the same number of bars, and computes MusPy's figures
(`datasets.symbolic.musicality`) of each continuation beside those of the real continuation of
the same piece. The sources:

- `real`: what the composer wrote next (the target the models' figures should match);
- `music_transformer`: the run's model;
- `vanilla_transformer`: its vanilla baseline, when the run has one;
- `ngram`: the n-gram baseline, sampled through the same grammar-constrained loop.

Every source samples with the same temperature and nucleus, seeded per prompt, so a study is
deterministic. Figures are averaged over prompts (NaN where undefined for a prompt is left out).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from datasets.io import RejectedInput
from datasets.symbolic.musicality import continuation_musicality
from datasets.symbolic.tokenizer import VOCAB_FILE, Vocab
from models.symbolic.data import Piece, read_pieces
from models.symbolic.generate import (
    Feeder,
    Prompt,
    cut_prompt,
    ngram_feeder,
    read_midi_piece,
    sample_continuation,
    tokens_to_notes,
    transformer_feeder,
    write_figure,
)
from models.symbolic.ngram import NGram
from models.symbolic.transformer import MusicTransformer

# The figures the study reports, in table order: key, pitch, texture, rhythm.
FIGURES = (
    "in_prompt_key",
    "scale_consistency",
    "pitch_class_entropy",
    "pitch_range",
    "density_ratio",
    "polyphony",
    "empty_beat_rate",
    "groove_consistency",
)
SOURCES = ("real", "music_transformer", "vanilla_transformer", "ngram")


@dataclass(frozen=True)
class StudyConfig:
    n_prompts: int = 16
    prompt_bars: int = 4
    continuation_bars: int = 8
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 2048  # a hard cap per continuation, whatever the texture
    seed: int = 0


def held_out_pieces(test_path: str | Path, config: StudyConfig) -> list[Piece]:
    """Up to `n_prompts` untransposed test pieces long enough for prompt + continuation,
    spread evenly over the split (in piece id order, so the choice is reproducible)."""
    bars = config.prompt_bars + config.continuation_bars
    eligible = sorted(
        (
            piece
            for piece in read_pieces(test_path)
            if piece.transpose == 0 and piece.beats[-1] >= bars * piece.bar_steps
        ),
        key=lambda piece: piece.piece_id,
    )
    if len(eligible) <= config.n_prompts:
        return eligible
    picks = np.linspace(0, len(eligible) - 1, config.n_prompts).round().astype(int)
    return [eligible[i] for i in picks]


def split_at(
    tokens: np.ndarray, vocab: Vocab, bar_steps: int, prompt_beats: float, end_beats: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A token sequence's notes before `prompt_beats` (the prompt) and from there up to
    `end_beats` (the continuation, its clock restarted at 0)."""
    notes = tokens_to_notes(tokens, vocab, max(1, round(bar_steps / vocab.steps_per_beat)))
    prompt = notes[notes.onset < prompt_beats]
    after = notes[(notes.onset >= prompt_beats) & (notes.onset < end_beats)]
    return prompt, after.assign(onset=after.onset - prompt_beats)


def musicality_study(
    run_dir: str | Path,
    test_path: str | Path,
    vocab: Vocab,
    ngram: NGram,
    vanilla_dir: str | Path | None = None,
    config: StudyConfig = StudyConfig(),
) -> dict[str, Any]:
    """The study on the test pieces of `test_path` (see the module docstring); returns the
    per-source means (`sources`), the prompts' own figures (`prompts`) and every prompt's rows
    (`per_prompt`)."""
    model = MusicTransformer.load(run_dir)
    feeders: dict[str, Callable[[int], Feeder]] = {
        "music_transformer": lambda bar_steps: transformer_feeder(model, bar_steps),
        "ngram": lambda bar_steps: ngram_feeder(ngram),
    }
    if vanilla_dir is not None:
        vanilla = MusicTransformer.load(vanilla_dir)
        feeders["vanilla_transformer"] = lambda bar_steps: transformer_feeder(vanilla, bar_steps)
    pieces = held_out_pieces(test_path, config)
    prompts = [Prompt(p.tokens, p.beats, p.bar_steps, p.piece_id) for p in pieces]
    return study_prompts(prompts, feeders, vocab, config)


def study_prompts(
    prompts: list[Prompt],
    feeders: Mapping[str, Callable[[int], Feeder]],
    vocab: Vocab,
    config: StudyConfig,
) -> dict[str, Any]:
    """The study's figures for `prompts`, each a whole piece: its first `prompt_bars` bars are
    continued by every feeder, and what follows them in the piece is the `real` continuation."""
    per_prompt = []
    for index, piece in enumerate(prompts):
        name, tokens, beats, bar = piece.name, piece.tokens, piece.beats, piece.bar_steps
        prompt_steps = config.prompt_bars * bar
        end_steps = prompt_steps + config.continuation_bars * bar
        window = prompt_steps / vocab.steps_per_beat, end_steps / vocab.steps_per_beat
        prompt = cut_prompt(tokens, beats, prompt_steps, bar, name)
        prompt_notes, real = split_at(tokens, vocab, bar, *window)
        continuations = {"real": real}
        for source, make_feeder in feeders.items():
            continued = _continue(make_feeder(bar), vocab, prompt, end_steps, config, index)
            continuations[source] = split_at(continued, vocab, bar, *window)[1]
        for source, notes in continuations.items():
            figures = continuation_musicality(prompt_notes, notes)
            per_prompt.append({"piece_id": name, "source": source, **figures})
    if not prompts:  # no piece is long enough: an empty study, said so
        return {"config": asdict(config), "n_prompts": 0, "sources": {}, "prompts": {}}
    table = pd.DataFrame(per_prompt)
    sources = {
        source: _means(table[table.source == source], FIGURES)
        for source in SOURCES
        if (table.source == source).any()
    }
    prompt_figures = [f"prompt_{f}" for f in FIGURES if f"prompt_{f}" in table]
    prompt_means = _means(table[table.source == "real"], prompt_figures)
    return {
        "config": asdict(config),
        "n_prompts": len(prompts),
        "sources": sources,
        "prompts": {key.removeprefix("prompt_"): value for key, value in prompt_means.items()},
        "per_prompt": [_json_row(row) for row in per_prompt],
    }


def midi_prompt_study(
    run_dir: str | Path, midi_paths: list[Path], config: StudyConfig = StudyConfig()
) -> dict[str, Any]:
    """The study of a model directory (its own vocab.json) on MIDI files from outside its
    corpus: each file's first bars continued by the model beside the file's own next bars.
    Files that do not read, or are shorter than the prompt and one bar, are listed in
    `rejected` with the reason and left out."""
    run_dir = Path(run_dir)
    vocab = Vocab.from_json((run_dir / VOCAB_FILE).read_text())
    model = MusicTransformer.load(run_dir)
    prompts: list[Prompt] = []
    rejected: list[dict[str, str]] = []
    for path in sorted(midi_paths):
        try:
            piece = read_midi_piece(path, vocab)
        except (RejectedInput, ValueError) as exc:
            rejected.append({"file": str(path), "reason": str(exc)})
            continue
        if piece.beats.max() < (config.prompt_bars + 1) * piece.bar_steps:
            reason = f"shorter than {config.prompt_bars + 1} bars"
            rejected.append({"file": str(path), "reason": reason})
            continue
        prompts.append(piece)
    feeders = {"music_transformer": lambda bar_steps: transformer_feeder(model, bar_steps)}
    return study_prompts(prompts, feeders, vocab, config) | {"rejected": rejected}


def _continue(
    feed: Feeder, vocab: Vocab, prompt: Prompt, end_steps: int, config: StudyConfig, index: int
) -> np.ndarray:
    generator = torch.Generator().manual_seed(config.seed * 100_003 + index)
    tokens, _ = sample_continuation(
        feed,
        vocab,
        prompt,
        config.max_tokens,
        config.temperature,
        top_p=config.top_p,
        generator=generator,
        until_step=end_steps,
    )
    return tokens


def _means(rows: pd.DataFrame, columns: list[str] | tuple[str, ...]) -> dict[str, float | None]:
    """Mean over prompts of each column, NaN left out; None where no prompt defines it."""
    means = {}
    for column in columns:
        values = rows[column].to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        means[column] = round(float(values.mean()), 4) if len(values) else None
    return means


def _json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: None if isinstance(value, float) and math.isnan(value) else value
        for key, value in row.items()
    }


def study_rows(study: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per source (the prompts first) with the study's figures: the table artifact."""
    rows = [{"source": "prompt", **study["prompts"]}]
    rows += [{"source": source, **figures} for source, figures in study["sources"].items()]
    return [{"source": row["source"], **{f: row.get(f) for f in FIGURES}} for row in rows]


def write_study_plot(study: Mapping[str, Any], path: str | Path) -> Path:
    """One panel per figure, one bar per source (the real continuation grey): how far each
    model's continuations sit from the music's own."""
    # Imported here: only this plot needs matplotlib, and it is slow to import.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(study["sources"])
    colors = {
        "real": "0.55",
        "music_transformer": "tab:blue",
        "vanilla_transformer": "tab:orange",
        "ngram": "tab:green",
    }
    fig, axes = plt.subplots(2, 4, figsize=(14, 5.5), dpi=90)
    for ax, figure in zip(axes.flat, FIGURES, strict=True):
        values = [study["sources"][s].get(figure) for s in sources]
        heights = [np.nan if v is None else v for v in values]
        ax.bar(range(len(sources)), heights, color=[colors[s] for s in sources])
        prompt_value = study["prompts"].get(figure)
        if prompt_value is not None:
            ax.axhline(prompt_value, color="k", linestyle=":", linewidth=1)
        ax.set_title(figure, fontsize=9)
        ax.set_xticks(range(len(sources)), [s.replace("_", "\n") for s in sources], fontsize=7)
    fig.suptitle(
        f"Continuations of {study['n_prompts']} held-out test prompts (dotted: the prompts)",
        fontsize=10,
    )
    fig.tight_layout()
    return write_figure(fig, path)


def midi_files(paths: list[str]) -> list[Path]:
    """The MIDI files named, and those under the directories named."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += [p for p in path.rglob("*") if p.suffix.lower() in (".mid", ".midi")]
        else:
            files.append(path)
    return sorted(files)


def main(argv: list[str] | None = None) -> None:
    """`python -m models.symbolic.musicality_study --model DIR FILE_OR_DIR...`: the study of a
    model directory on your own MIDI files; prints one row per prompt, then the summary as one
    JSON line (the model's mean figures beside the real continuations' and the prompts')."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", required=True, help="model directory with its vocab.json")
    parser.add_argument("paths", nargs="+", help="MIDI files or directories of them")
    parser.add_argument("--prompt-bars", type=int, default=StudyConfig.prompt_bars)
    parser.add_argument("--continuation-bars", type=int, default=StudyConfig.continuation_bars)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the whole study (every prompt's row) as JSON here")
    args = parser.parse_args(argv)
    config = StudyConfig(
        prompt_bars=args.prompt_bars,
        continuation_bars=args.continuation_bars,
        seed=args.seed,
    )
    study = midi_prompt_study(args.model, midi_files(args.paths), config)
    if args.out:
        Path(args.out).write_text(json.dumps(study, indent=1) + "\n")
    columns = ["piece_id", "source", "in_prompt_key", "scale_consistency", "pitch_class_entropy"]
    columns += ["density_ratio"]
    print(pd.DataFrame(study.get("per_prompt", []), columns=columns).round(3).to_string())
    for row in study["rejected"]:
        print(f"rejected {row['file']}: {row['reason']}")
    print(json.dumps({k: v for k, v in study.items() if k not in ("per_prompt", "rejected")}))


if __name__ == "__main__":
    main()
