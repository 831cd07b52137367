"""The symbolic music flow: corpus -> notes -> tokens in 12 keys -> model -> music.

Stages: `data` (manifest, notes, tokens, vocab under data_dir/symbolic), `train` (the
Transformer-XL-style model and its vanilla baseline), `evaluate` (NLL, perplexity, accuracy
beside the n-gram and vanilla baselines), `generate` (continue a prompt as .mid, .wav, .png).
Each stage reads what the earlier ones wrote under `data_dir`, so any subset can run.

    python -m flows.symbolic --help
    python -m flows.symbolic --corpus bach --profile quick
    python -m flows.symbolic --stages generate --prompt pachelbel --temperature 0.9
    python -m flows.symbolic --stages data --jsb ../shared/data/jsb/Jsb16thSeparated.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, Field

from datasets.symbolic.tokenizer import Vocab
from flows.cli import run_cli
from tasks.symbolic import discover_task, parse_task, split_task, tokenize_task, write_task
from tasks.symbolic_model import (
    evaluate_music_model,
    generate_music,
    jsb_benchmark,
    music_run_dir,
    train_music_baseline,
    train_music_model,
)

Stage = Literal["data", "train", "evaluate", "generate"]
QUICK_LIMIT = 24  # pieces the quick profile takes when no limit is given


class SymbolicParams(BaseModel):
    data_dir: str = Field("data", description="Directory all outputs and caches go under")
    corpus: str = Field(
        "bach",
        description="'bach' (music21's chorales), a directory of MIDI/score files, "
        "or a JSB .json file (keeps its own split)",
    )
    stages: list[Stage] = Field(
        default_factory=lambda: ["data", "train", "evaluate", "generate"],
        description="Stages to run, in pipeline order",
    )
    profile: Literal["tiny", "quick", "full"] = Field(
        "quick",
        description=f"tiny: the smallest model (60 steps, seconds; for tests and smoke runs); "
        f"tiny and quick: {QUICK_LIMIT} chorales of bach unless --limit says otherwise",
    )
    seed: int = Field(0, description="Seed of the train/valid/test split")
    valid_fraction: float = Field(0.1, ge=0, lt=1, description="Share of pieces for valid")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of pieces for test")
    steps_per_beat: int = Field(4, ge=1, description="Grid steps per quarter note")
    max_duration: int = Field(64, ge=1, description="Longest duration token, in grid steps")
    max_shift: int = Field(64, ge=1, description="Longest time-shift token, in grid steps")
    limit: int | None = Field(
        None, ge=1, description="Most pieces to use (per split for a JSB file); none: all"
    )
    max_file_bytes: int = Field(
        20_000_000, ge=1, description="Files larger than this are rejected unread"
    )
    max_notes: int | None = Field(
        200_000, ge=1, description="Files with more notes are rejected; none: no limit"
    )
    task_runner: Literal["threads", "dask"] = Field("threads", description="Task runner")
    workers: int = Field(2, ge=1, description="Threads or Dask workers")
    dask_address: str | None = Field(
        None, description="Existing Dask scheduler (tcp://host:8786); none: a local cluster"
    )
    batch_size: int = Field(32, ge=1, description="Files per parse and per tokenize task")
    model: str | None = Field(
        None,
        description="Model run for evaluate/generate without train (a directory, or a run "
        "name under data_dir/models/music); none: the one this run trains (<profile>-seed<seed>)",
    )
    prompt: str = Field(
        "pachelbel",
        description="What generate continues: 'pachelbel' (built in), a MIDI file, or a piece id",
    )
    prompt_bars: int = Field(4, ge=1, description="Bars of the prompt to keep")
    length: int = Field(512, ge=1, description="Tokens to generate after the prompt")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature")
    top_k: int = Field(0, ge=0, description="Sample from the k likeliest tokens; 0: all")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass; 1: off")
    jsb: str | None = Field(
        None,
        description="Also run the JSB benchmark on this Coconet-format JSON file "
        "(e.g. Jsb16thSeparated.json); none: skip it",
    )

    def piece_limit(self) -> int | None:
        """The quick profile takes a subset of the built-in corpus only: a corpus of the
        user's is read whole unless --limit says otherwise."""
        if self.limit is None and self.profile != "full" and self.corpus == "bach":
            return QUICK_LIMIT
        return self.limit

    def vocab(self) -> Vocab:
        return Vocab(self.steps_per_beat, self.max_duration, self.max_shift)


class SymbolicResult(BaseModel):
    data_dir: str
    manifest: str
    notes: str
    tokens_dir: str
    vocab: str
    n_files: int = 0
    n_ok: int = 0
    n_rejected: int = 0
    n_duplicate: int = 0
    n_pieces: int = 0
    pieces_train: int = 0
    pieces_valid: int = 0
    pieces_test: int = 0
    n_sequences: int = 0
    n_tokens: int = 0
    n_notes: int = 0
    n_moved: int = 0
    n_merged: int = 0
    n_dropped: int = 0
    n_parsed: int = 0
    n_parse_reused: int = 0
    reused: bool = False
    run_dir: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)
    generated: dict[str, Any] = Field(default_factory=dict)
    jsb: dict[str, Any] = Field(default_factory=dict)


def data_stage(params: SymbolicParams) -> dict[str, int | bool]:
    """Corpus -> manifest, notes, tokens in 12 keys, vocab under `data_dir/symbolic`."""
    data_dir = Path(params.data_dir)
    cache_dir = str(data_dir / "cache" / "symbolic")
    limit = params.piece_limit()
    vocab_json = params.vocab().to_json()
    entries = discover_task(params.corpus, str(data_dir), limit, params.max_file_bytes)
    batches = [
        entries[i : i + params.batch_size] for i in range(0, len(entries), params.batch_size)
    ]
    futures = [parse_task.submit(batch, cache_dir, params.max_notes) for batch in batches]
    records = [record for future in futures for record in future.result()]
    splits = split_task(records, params.seed, params.valid_fraction, params.test_fraction, limit)
    tokenized = [
        tokenize_task.submit(records[i : i + params.batch_size], vocab_json, cache_dir)
        for i in range(0, len(records), params.batch_size)
    ]
    token_records = [record for future in tokenized for record in future.result()]
    summary = write_task(records, splits, token_records, vocab_json, str(data_dir / "symbolic"))
    return summary | {
        "n_parsed": sum(r["parsed"] for r in records),
        "n_parse_reused": sum(r["reused"] for r in records),
    }


@flow(name="symbolic")
def symbolic_flow(params: SymbolicParams = SymbolicParams()) -> SymbolicResult:
    """Symbolic music: a corpus to tokens in all 12 keys, a Transformer-XL-style model and its
    baselines, their metrics, and a prompt continued as MIDI, audio and a piano roll."""
    data_dir = params.data_dir
    out = Path(data_dir).resolve() / "symbolic"
    result: dict[str, Any] = data_stage(params) if "data" in params.stages else {}
    if "train" in params.stages:
        result["run_dir"] = train_music_model(data_dir, params.profile, params.seed)["run_dir"]
        train_music_baseline(data_dir, result["run_dir"], params.profile, params.seed)
    elif params.model:
        named = music_run_dir(data_dir, params.model)
        result["run_dir"] = str(named if named.is_dir() else Path(params.model))
    else:
        result["run_dir"] = str(music_run_dir(data_dir, f"{params.profile}-seed{params.seed}"))
    if "evaluate" in params.stages:
        result["metrics"] = evaluate_music_model(data_dir, result["run_dir"])
    if "generate" in params.stages:
        result["generated"] = generate_music(
            data_dir,
            result["run_dir"],
            params.prompt,
            params.prompt_bars,
            params.length,
            params.temperature,
            params.top_k,
            params.top_p,
            params.seed,
        )
    if params.jsb:
        result["jsb"] = jsb_benchmark(params.jsb, data_dir, params.profile, params.seed)
    return SymbolicResult(
        data_dir=str(Path(data_dir).resolve()),
        manifest=str(out / "manifest.parquet"),
        notes=str(out / "notes.parquet"),
        tokens_dir=str(out / "tokens"),
        vocab=str(out / "vocab.json"),
        **result,
    )


def main() -> None:
    run_cli(symbolic_flow, SymbolicParams)


if __name__ == "__main__":
    main()
