"""The JSB chorales benchmark of the Music Transformer paper, on our model.

    python -m models.symbolic.jsb --jsb ../shared/data/jsb/Jsb16thSeparated.json \
        --out data/models/jsb/quick --profile quick

How the comparison is made (Huang et al. 2018, Table 1):
- data: Coconet's `Jsb16thSeparated.json`, its own train / valid / test split, untouched (no
  transposition: the published models train on the split as given);
- serialization: `datasets.symbolic.jsb.serialize_chorale`, S A T B pitch tokens per 16th-note step
  (a rest is its own token), bos before and eos after each chorale;
- unit: mean negative log-likelihood in nats per token over every token after bos of every
  valid chorale (eos included, 1 of ~1,100 tokens per chorale), each chorale scored on its own
  with Transformer-XL memory across segments (`models.symbolic.evaluate.evaluate`);
- the figure reported beside the published ones is that valid NLL after the profile's fixed
  number of steps (no checkpoint picked on valid); test NLL is reported too.
The beat embedding sees the 16th step (`beats`) with 16 steps per bar (4/4).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets.io import write_json_atomic, write_parquet_atomic
from datasets.symbolic.jsb import (
    JSB_BAR_STEPS,
    JSB_VOCAB_SIZE,
    REST,
    SPLITS,
    fitting_transpositions,
    load_jsb,
    serialize_chorale,
    transpose_chorale,
    voice_ranges,
)
from datasets.symbolic.tokens import TOKEN_ROW_GROUP, token_table
from models.symbolic.config import PROFILES, profile_configs
from models.symbolic.data import Piece
from models.symbolic.evaluate import evaluate, token_nll
from models.symbolic.run import evaluate_run, train_with_baseline
from models.symbolic.train import train
from models.symbolic.transformer import MusicTransformer

# NLL per token on the JSB valid split, Huang et al. 2018 (Music Transformer), Table 1.
PUBLISHED = {
    "music_transformer": 0.335,
    "transformer_relative_attention": 0.357,
    "vanilla_transformer": 0.417,
    "coconet": 0.436,
}


@dataclass(frozen=True)
class JsbRecipe:
    """Training choices beyond a profile's (the shipped JSB model's are `SHIPPED_RECIPE`)."""

    name: str
    steps: int | None = None  # None: the profile's
    vanilla: bool = True
    transpose: bool = False
    dropout: float | None = None  # None: the preset's
    lr: float | None = None  # peak learning rate; None: the profile's
    warmup: int | None = None  # None: the profile's
    init_from: str | None = None  # start from this model directory's weights


# The shipped models/pretrained/jsb, in two stages: every key each training chorale fits, strong
# dropout, twice the full profile's steps (the 7x larger epochs still fall in valid NLL at
# 4,000); then, from those weights, a second cosine schedule at a third of the peak rate.
SHIPPED_RECIPE = JsbRecipe("transposed", steps=4000, vanilla=False, transpose=True, dropout=0.2)
SHIPPED_RESTART = dataclasses.replace(
    SHIPPED_RECIPE, name="transposed-restart", steps=1000, lr=3e-4, warmup=50
)


def write_jsb_tokens(
    jsb_path: str | Path,
    tokens_dir: str | Path,
    transpose: bool = False,
    splits: tuple[str, ...] = SPLITS,
) -> dict[str, int]:
    """Serialized chorales of `splits` as tokens Parquet files (the symbolic data stage's
    schema; a note there is one sounding voice at one 16th step here); returns rows per split.
    With `transpose`, each training chorale also appears in every other key its four voices can
    sing (`fitting_transpositions` within the training split's voice ranges); valid and test
    stay as given."""
    counts = {}
    chorales_by_split = load_jsb(jsb_path)
    ranges = voice_ranges(chorales_by_split["train"])
    for split in splits:
        chorales = chorales_by_split[split]
        rows = []
        for index, chorale in enumerate(chorales):
            augment = transpose and split == "train"
            shifts = fitting_transpositions(chorale, ranges) if augment else [0]
            for shift in shifts:
                tokens, beats = serialize_chorale(transpose_chorale(chorale, shift))
                rows.append(
                    {
                        "piece_id": f"{split}/{index:04d}",
                        "split": split,
                        "transpose": shift,
                        "tokens": tokens.tolist(),
                        "beats": beats.tolist(),
                        "bar_steps": JSB_BAR_STEPS,
                        "n_notes": int((chorale != REST).sum()),
                        "n_moved": 0,
                        "n_merged": 0,
                        "n_dropped": 0,
                    }
                )
        write_parquet_atomic(
            Path(tokens_dir) / f"{split}.parquet", token_table(rows), row_group_size=TOKEN_ROW_GROUP
        )
        counts[split] = len(rows)
    return counts


def key_ensemble_nll(model: MusicTransformer, chorales: list[np.ndarray], span: int) -> float:
    """Mean NLL per token of the model averaged over keys: each token's probability is the mean
    of the model's probabilities for it in the chorale transposed by every shift in -span..span
    (a fixed set, so the mixture never looks at the chorale's future). A model trained in every
    key gives a proper, sharper distribution this way, at 2 * span + 1 times the compute."""
    shifts = range(-span, span + 1)
    total, count = 0.0, 0
    for chorale in chorales:
        pieces = []
        for shift in shifts:
            tokens, beats = serialize_chorale(transpose_chorale(chorale, shift))
            pieces.append(
                Piece("", shift, tokens.astype(np.int64), beats.astype(np.int64), JSB_BAR_STEPS)
            )
        nll, _, mask = token_nll(model, pieces)
        log_probs = -nll[:, mask[0]]
        mixture = torch.logsumexp(log_probs, dim=0) - math.log(len(shifts))
        total -= mixture.sum().item()
        count += int(mask[0].sum())
    return total / count


def score_jsb_model(
    jsb_path: str | Path, run_dir: str | Path, tokens_dir: str | Path, key_ensemble: int = 0
) -> dict[str, Any]:
    """A saved model (no training) scored on Coconet's valid and test chorales, in the unit of
    the published figures: mean NLL in nats per token after bos, each chorale on its own. With
    `key_ensemble` > 0, also the NLL of the model averaged over that many semitones up and down
    (`key_ensemble_nll`; the published figures are single models)."""
    write_jsb_tokens(jsb_path, tokens_dir, splits=("valid", "test"))
    model = MusicTransformer.load(run_dir)
    if model.config.vocab_size != JSB_VOCAB_SIZE:
        raise ValueError(
            f"{run_dir}: a model of {model.config.vocab_size} tokens, not the "
            f"{JSB_VOCAB_SIZE} of the JSB serialization; was it trained with --jsb?"
        )
    scores = {s: evaluate(model, Path(tokens_dir) / f"{s}.parquet") for s in ("valid", "test")}
    ensemble = {}
    if key_ensemble > 0:
        chorales = load_jsb(jsb_path)
        ensemble = {
            f"{split}_nll_key_ensemble": key_ensemble_nll(model, chorales[split], key_ensemble)
            for split in ("valid", "test")
        } | {"key_ensemble": key_ensemble}
    return {
        "jsb_path": str(jsb_path),
        "model": str(run_dir),
        "valid_nll": scores["valid"]["nll"],
        "test_nll": scores["test"]["nll"],
        "valid_accuracy": scores["valid"]["accuracy"],
        "test_accuracy": scores["test"]["accuracy"],
        **ensemble,
        "published_valid_nll": PUBLISHED,
        "params": model.num_parameters(),
    }


def run_jsb_benchmark(
    jsb_path: str | Path,
    out_dir: str | Path,
    profile: str,
    seed: int,
    progress: Callable[[float], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
    steps: int | None = None,
    vanilla: bool = True,
    transpose: bool = False,
    dropout: float | None = None,
    lr: float | None = None,
    warmup: int | None = None,
    init_from: str | None = None,
) -> dict[str, Any]:
    """Serialize, train (the model, and the vanilla baseline unless `vanilla` is False), score
    with the n-gram baseline too; writes out_dir/jsb_benchmark.json. `steps`, `lr` and
    `warmup` override the profile's; `init_from` starts from a model directory's weights."""
    out_dir = Path(out_dir)
    tokens_dir = out_dir / "tokens"
    pieces = write_jsb_tokens(jsb_path, tokens_dir, transpose)
    overrides: dict[str, Any] = {} if dropout is None else {"dropout": dropout}
    model_config, train_config = profile_configs(
        profile, JSB_VOCAB_SIZE, seed, max_bar_steps=16, **overrides
    )
    changes = {"steps": steps, "lr": lr, "warmup": warmup, "init_from": init_from}
    train_config = dataclasses.replace(
        train_config, **{key: value for key, value in changes.items() if value is not None}
    )
    if vanilla:
        training = train_with_baseline(
            out_dir / "run", tokens_dir, model_config, train_config, progress, log
        )
    else:
        splits = tokens_dir / "train.parquet", tokens_dir / "valid.parquet"
        training = train(out_dir / "run", *splits, model_config, train_config, progress, log)
    metrics = evaluate_run(out_dir / "run", tokens_dir)
    result = {
        "jsb_path": str(jsb_path),
        "profile": profile,
        "seed": seed,
        "pieces": pieces,
        "valid_nll": metrics["valid_nll"],
        "test_nll": metrics["test_nll"],
        "valid_accuracy": metrics["valid_accuracy"],
        "test_accuracy": metrics["test_accuracy"],
        "baselines_valid_nll": {
            name: scores["valid_nll"] for name, scores in metrics["baselines"].items()
        },
        "published_valid_nll": PUBLISHED,
        "tokens_trained": training["tokens_trained"],
        "steps": training["steps"],
        "params": metrics["params"],
    }
    write_json_atomic(out_dir / "jsb_benchmark.json", result)
    seconds = training["seconds_total"] + training.get("vanilla", {}).get("seconds_total", 0.0)
    return {**result, "train_seconds": seconds, "run_dir": str(out_dir / "run")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jsb", required=True, help="Coconet-format Jsb16thSeparated.json")
    parser.add_argument("--out", default="data/models/jsb", help="output directory")
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="override the profile's steps")
    parser.add_argument("--no-vanilla", action="store_true", help="skip the vanilla baseline")
    parser.add_argument(
        "--transpose", action="store_true", help="train on every key each chorale fits"
    )
    parser.add_argument("--dropout", type=float, default=None, help="override the dropout")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_jsb_benchmark(
        args.jsb,
        args.out,
        args.profile,
        args.seed,
        log=print,
        steps=args.steps,
        vanilla=not args.no_vanilla,
        transpose=args.transpose,
        dropout=args.dropout,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
