"""A music run end to end: the model and its baselines trained on the same token
budget, and all three scored on the same valid and test pieces (metrics.json).

Baselines: the vanilla Transformer (`MusicConfig.vanilla`: same size, learned absolute
positions, no memory, no beat embedding) trained by the same loop on the same stream, steps,
batch and segment length; and an interpolated absolute-discounting n-gram model
(models.symbolic.ngram) fitted on the pieces that stream met first, up to the same number of tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from datasets.io import write_json_atomic
from datasets.symbolic.tokenizer import VOCAB_FILE, Vocab
from models.checkpoint import CONFIG_FILE, STATE_JSON_FILE
from models.symbolic.config import PROFILES, MusicConfig, TrainConfig, profile_configs
from models.symbolic.data import first_pieces
from models.symbolic.evaluate import eval_pieces, evaluate
from models.symbolic.musicality_study import StudyConfig, musicality_study, write_study_plot
from models.symbolic.ngram import NGram
from models.symbolic.train import TRAIN_CONFIG_FILE, train
from models.symbolic.transformer import MusicTransformer

METRICS_JSON = "metrics.json"
MUSICALITY_PNG = "musicality.png"

VANILLA_DIR = "baselines/vanilla_transformer"


def train_with_baseline(
    run_dir: str | Path,
    tokens_dir: str | Path,
    model_config: MusicConfig,
    train_config: TrainConfig,
    progress: Callable[[float], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Train the model in `run_dir`, then the vanilla baseline in `run_dir/baselines/...` on the
    same data stream, segment length, steps and batch: the same token budget."""
    tokens_dir = Path(tokens_dir)
    splits = tokens_dir / "train.parquet", tokens_dir / "valid.parquet"

    def part(offset: float) -> Callable[[float], None] | None:
        return None if progress is None else (lambda f: progress(offset + f / 2))

    main = train(run_dir, *splits, model_config, train_config, part(0.0), log)
    vanilla = train(
        Path(run_dir) / VANILLA_DIR, *splits, model_config.vanilla(), train_config, part(0.5), log
    )
    return {**main, "vanilla": vanilla}


def evaluate_run(
    run_dir: str | Path,
    tokens_dir: str | Path,
    max_pieces: int | None = None,
    vocab: Vocab | None = None,
    study: StudyConfig | None = None,
    original_keys: bool = False,
) -> dict[str, Any]:
    """Valid and test metrics of a run's model and of both baselines; written to metrics.json
    (`original_keys`: scored on the untransposed pieces only).

    The n-gram model is fitted on the pieces the run's training stream met first, up to the same
    token budget the Transformers trained on (each piece once at most). With `vocab` (a note
    vocabulary; not JSB's serialization) the musicality study of continuations of held-out
    test prompts runs too (`models.symbolic.musicality_study`): under "musicality", with its
    plot in `run_dir/musicality.png`.
    """
    run_dir, tokens_dir = Path(run_dir), Path(tokens_dir)
    train_config = json.loads((run_dir / TRAIN_CONFIG_FILE).read_text())
    model = MusicTransformer.load(run_dir)
    budget = train_config["steps"] * train_config["batch_size"] * model.config.seg_len
    # The n-gram gets the planned budget, which equals the Transformers' when they finished.
    stream = torch.Generator().manual_seed(train_config["seed"] + 1)
    ngram = NGram(model.config.vocab_size).fit(
        p.tokens
        for p in first_pieces(
            tokens_dir / "train.parquet", stream, train_config["shuffle_buffer"], budget
        )
    )
    scorers = {
        "model": lambda path: evaluate(model, path, max_pieces, original_keys=original_keys),
        "ngram": lambda path: ngram.score(eval_pieces(path, max_pieces, original_keys)),
    }
    if (run_dir / VANILLA_DIR / CONFIG_FILE).exists():  # a run may skip it (JSB --no-vanilla)
        vanilla = MusicTransformer.load(run_dir / VANILLA_DIR)
        scorers["vanilla_transformer"] = lambda path: evaluate(
            vanilla, path, max_pieces, original_keys=original_keys
        )
    results: dict[str, dict[str, Any]] = {}
    for name, scorer in scorers.items():
        results[name] = {}
        if name != "ngram":  # a run stopped early is scored as it stands, and says so
            directory = run_dir if name == "model" else run_dir / VANILLA_DIR
            results[name]["steps_trained"] = trained_steps(directory)
        for split in ("valid", "test"):
            scores = scorer(tokens_dir / f"{split}.parquet")
            results[name].update(flatten(split, scores))
    if vocab is not None:
        vanilla_dir = run_dir / VANILLA_DIR if "vanilla_transformer" in results else None
        study_result = musicality_study(
            run_dir, tokens_dir / "test.parquet", vocab, ngram, vanilla_dir, study or StudyConfig()
        )
        if study_result["n_prompts"]:
            write_study_plot(study_result, run_dir / MUSICALITY_PNG)
        results["model"]["musicality"] = study_result
    metrics = {
        **results.pop("model"),
        "baselines": results,
        "token_budget": budget,
        "ngram_tokens_trained": ngram.tokens_trained,
        "ngram_order": ngram.order,
        "params": model.num_parameters(),
        "world_size": trained_world_size(run_dir),
        "max_pieces": max_pieces,
        "original_keys": original_keys,
    }
    write_json_atomic(run_dir / METRICS_JSON, metrics)
    return metrics


def _checkpoint_extra(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / STATE_JSON_FILE).read_text())["extra"]


def trained_steps(run_dir: Path) -> int:
    """The step of the checkpoint in `run_dir` (models.checkpoint's train state)."""
    return int(_checkpoint_extra(run_dir)["step"])


def train_seconds(run_dir: str | Path) -> float | None:
    """Wall time of training over every call of the run in `run_dir` (None: a checkpoint from
    before the trainer recorded it)."""
    return _checkpoint_extra(run_dir).get("seconds")


def trained_world_size(run_dir: str | Path) -> int:
    """How many processes trained the last steps of the run in `run_dir` (runs from before
    data-parallel training were one)."""
    return int(_checkpoint_extra(run_dir).get("world_size", 1))


def flatten(split: str, scores: dict[str, Any]) -> dict[str, Any]:
    """{"nll": ..} -> {"test_nll": ..}; per-transposition scores under "test_by_transpose"."""
    return {f"{split}_{key}": value for key, value in scores.items()}


def main() -> None:
    """Train and evaluate one run from the command line (no Prefect), e.g. a long CPU run."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-dir", default="data", help="holds symbolic/tokens, vocab.json")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train", nargs="*", default=[], metavar="KEY=VALUE", help="TrainConfig overrides"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    symbolic = Path(args.data_dir) / "symbolic"
    vocab = Vocab.from_json((symbolic / VOCAB_FILE).read_text())
    model_config, train_config = profile_configs(args.profile, vocab.size, args.seed)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.train)}
    train_config = dataclasses.replace(train_config, **overrides)
    result = train_with_baseline(
        args.run_dir, symbolic / "tokens", model_config, train_config, log=print
    )
    metrics = evaluate_run(args.run_dir, symbolic / "tokens")
    summary = {k: v for k, v in metrics.items() if "by_transpose" not in k and k != "baselines"}
    summary["baselines"] = {
        name: {k: v for k, v in scores.items() if "by_transpose" not in k}
        for name, scores in metrics["baselines"].items()
    }
    summary["train_seconds"] = result["seconds"] + result["vanilla"]["seconds"]
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
