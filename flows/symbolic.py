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
from typing import Any, ClassVar, Literal

from prefect import flow, get_run_logger
from pydantic import Field

from datasets.inventory import batches
from datasets.io import PROJECT_ROOT
from datasets.symbolic.tokenizer import Vocab
from flows.cli import run_cli
from flows.params import CorpusParams, CorpusResult
from models.symbolic.config import QUICK_LIMIT
from tasks.symbolic import discover_task, parse_task, split_task, tokenize_task, write_task
from tasks.symbolic_model import (
    evaluate_symbolic_model,
    generate_continuation,
    jsb_benchmark,
    jsb_evaluate,
    run_name,
    symbolic_run_dir,
    train_symbolic_baseline,
    train_symbolic_model,
)

Stage = Literal["data", "train", "evaluate", "generate"]


class SymbolicParams(CorpusParams):
    QUICK_LIMIT: ClassVar[int] = QUICK_LIMIT
    BUILTIN_CORPORA: ClassVar[frozenset[str]] = frozenset({"bach", "music21"})

    corpus: str = Field(
        "bach",
        description="'bach' (music21's chorales), 'music21' (every work music21 ships: "
        "chorales, Renaissance to Classical works, thousands of folk tunes), a directory of "
        "MIDI/score files, or a JSB .json file (keeps its own split)",
    )
    stages: list[Stage] = Field(
        default_factory=lambda: ["data", "train", "evaluate", "generate"],
        description="Stages to run, in pipeline order",
    )
    limit: int | None = Field(
        None, ge=1, description="Most pieces to use (per split for a JSB file); none: all"
    )
    steps_per_beat: int = Field(4, ge=1, description="Grid steps per quarter note")
    max_duration: int = Field(64, ge=1, description="Longest duration token, in grid steps")
    max_shift: int = Field(64, ge=1, description="Longest time-shift token, in grid steps")
    max_file_bytes: int = Field(
        20_000_000, ge=1, description="Files larger than this are rejected unread"
    )
    max_notes: int | None = Field(
        200_000, ge=1, description="Files with more notes are rejected; none: no limit"
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
        "(e.g. Jsb16thSeparated.json): train and score; with --model and no train stage, "
        "--stages evaluate scores that model on JSB's valid and test splits; none: skip it",
    )

    init_from: str | None = Field(
        None,
        description="Fine-tune: start training from this model directory's weights (e.g. "
        "models/pretrained/music21; same vocabulary), its architecture kept; the run is "
        "<profile>-from-<model>-seed<seed>; none: a random init",
    )
    shipped_model: str | None = Field(
        "models/pretrained/music21",
        description="The generate stage also continues the prompt with this shipped model "
        "directory (relative paths from the repository root), next to the run's own; none, "
        "or a directory not there: only the run's",
    )
    eval_keys: Literal["all", "original"] = Field(
        "all",
        description="Score valid and test in every key the data stage wrote, or in the "
        "original keys only (a large corpus: 12x less time)",
    )
    jsb_key_ensemble: int = Field(
        0,
        ge=0,
        le=6,
        description="With --jsb and --model: also score the model averaged over keys, this "
        "many semitones up and down (2N+1 times the compute; published figures are single "
        "models); 0: off",
    )

    def vocab(self) -> Vocab:
        return Vocab(self.steps_per_beat, self.max_duration, self.max_shift)


class SymbolicResult(CorpusResult):
    notes: str
    tokens_dir: str
    vocab: str
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
    generated: dict[str, Any] = Field(default_factory=dict)
    generated_shipped: dict[str, Any] = Field(default_factory=dict)
    jsb: dict[str, Any] = Field(default_factory=dict)
    # The headline of this run's evaluation (the chorale tokens, or JSB for a --jsb model).
    valid_nll: float | None = None
    test_nll: float | None = None


def data_stage(params: SymbolicParams) -> dict[str, int | bool]:
    """Corpus -> manifest, notes, tokens in 12 keys, vocab under `data_dir/symbolic`."""
    data_dir = Path(params.data_dir)
    cache_dir = str(data_dir / "cache" / "symbolic")
    limit = params.corpus_limit()
    vocab_json = params.vocab().to_json()
    entries = discover_task(params.corpus, str(data_dir), limit, params.max_file_bytes)
    futures = [
        parse_task.submit(batch, cache_dir, params.max_notes)
        for batch in batches(entries, params.batch_size, params.workers)
    ]
    records = [record for future in futures for record in future.result()]
    splits = split_task(records, params.seed, params.valid_fraction, params.test_fraction, limit)
    tokenized = [
        tokenize_task.submit(batch, vocab_json, cache_dir)
        for batch in batches(records, params.batch_size, params.workers)
    ]
    token_records = [record for future in tokenized for record in future.result()]
    summary = write_task(records, splits, token_records, vocab_json, str(data_dir / "symbolic"))
    return summary | {
        "n_parsed": sum(r["parsed"] for r in records),
        "n_parse_reused": sum(r["reused"] for r in records),
    }


def shipped_model_dir(name: str | None) -> Path | None:
    """The shipped model directory `name` (relative to the repository root), when it is
    there; a missing one is logged, as a checkout without that model is a normal state."""
    if not name:
        return None
    path = Path(name) if Path(name).is_absolute() else PROJECT_ROOT / name
    if not path.is_dir():
        get_run_logger().info(
            "no shipped model at %s: the prompt is continued by the run only", path
        )
        return None
    return path


@flow(name="symbolic")
def symbolic_flow(params: SymbolicParams = SymbolicParams()) -> SymbolicResult:
    """Symbolic music: a corpus to tokens in all 12 keys, a Transformer-XL-style model and its
    baselines, their metrics, and a prompt continued as MIDI, audio and a piano roll."""
    data_dir = params.data_dir
    stages = params.node_stages(params.stages)
    if stages != params.stages:
        get_run_logger().info(
            "node %d of %d runs only: %s", params.node_rank, params.nnodes, stages
        )
    result: dict[str, Any] = data_stage(params) if "data" in stages else {}
    if "train" in stages:
        training = (params.profile, params.seed, params.init_from, params.launch(), params.compile)
        trained = train_symbolic_model(data_dir, *training)
        result["run_dir"] = trained["run_dir"]
        train_symbolic_baseline(data_dir, result["run_dir"], *training)
    elif params.model:
        named = symbolic_run_dir(data_dir, params.model)
        result["run_dir"] = str(named if named.is_dir() else Path(params.model))
    else:
        own_run = run_name(params.profile, params.seed, params.init_from)
        result["run_dir"] = str(symbolic_run_dir(data_dir, own_run))
    # A model given with --jsb and no training is scored on the JSB splits, not on data_dir's.
    score_on_jsb = bool(params.jsb) and params.model is not None and "train" not in stages
    if "evaluate" in stages and not score_on_jsb:
        result["metrics"] = evaluate_symbolic_model(
            data_dir, result["run_dir"], params.eval_keys == "original"
        )
    if "generate" in stages:
        sampling = (
            params.prompt,
            params.prompt_bars,
            params.length,
            params.temperature,
            params.top_k,
            params.top_p,
            params.seed,
        )
        result["generated"] = generate_continuation(data_dir, result["run_dir"], *sampling)
        shipped = shipped_model_dir(params.shipped_model)
        if shipped is not None and shipped.resolve() != Path(result["run_dir"]).resolve():
            result["generated_shipped"] = generate_continuation(data_dir, str(shipped), *sampling)
    if params.jsb and score_on_jsb:
        if "evaluate" in stages:
            result["jsb"] = jsb_evaluate(
                params.jsb, data_dir, result["run_dir"], params.jsb_key_ensemble
            )
    elif params.jsb:
        result["jsb"] = jsb_benchmark(params.jsb, data_dir, params.profile, params.seed)
    headline = result.get("metrics") or result.get("jsb") or {}
    result |= {"valid_nll": headline.get("valid_nll"), "test_nll": headline.get("test_nll")}
    outputs = {"notes": "notes.parquet", "tokens_dir": "tokens", "vocab": "vocab.json"}
    return SymbolicResult.under(data_dir, "symbolic", outputs, **result)


def main() -> None:
    run_cli(symbolic_flow, SymbolicParams)


if __name__ == "__main__":
    main()
