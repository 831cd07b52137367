"""Tasks of the music model: train, evaluate, generate, and the JSB benchmark.

Thin wrappers: each calls pure functions from `models/` and hands back a small record of paths
and numbers. Training shows a progress artifact and ends with a table artifact of its metrics;
evaluation publishes the model beside both baselines.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from datasets.audio.render import render_midi_to_wav
from datasets.io import sha256_json, write_bytes_atomic
from datasets.stamps import read_stamp, reuse_stamp, write_stamp
from datasets.symbolic.tokenizer import VOCAB_FILE, Vocab
from models.checkpoint import load_config
from models.distributed import LaunchConfig, launch_training
from models.symbolic.config import MusicConfig, TrainConfig, profile_configs
from models.symbolic.generate import generate
from models.symbolic.jsb import PUBLISHED, JsbRecipe, run_jsb_benchmark, score_jsb_model
from models.symbolic.musicality_study import study_rows
from models.symbolic.run import METRICS_JSON, MUSICALITY_PNG, VANILLA_DIR, evaluate_run
from models.symbolic.train import METRICS_PARQUET, rank_args, train
from tasks.common import Progress, publish_table

# Runs resume from their own checkpoints; Prefect's cache would only hide a changed dataset.
MAX_TABLE_ROWS = 60
# What torchrun starts on each rank of a data-parallel run.
TRAIN_MODULE = "models.symbolic.train"


def symbolic_paths(data_dir: str) -> tuple[Path, Vocab]:
    symbolic = Path(data_dir) / "symbolic"
    return symbolic / "tokens", Vocab.from_json((symbolic / VOCAB_FILE).read_text())


def model_vocab(run_dir: str | Path, data_dir: str) -> Vocab:
    """The vocabulary a model was trained with: its own directory's vocab.json (a pretrained
    or exported model carries one), else the data directory's."""
    own = Path(run_dir) / VOCAB_FILE
    if own.is_file():
        return Vocab.from_json(own.read_text())
    return symbolic_paths(data_dir)[1]


def symbolic_run_dir(data_dir: str, run_name: str) -> Path:
    return Path(data_dir) / "models" / "music" / run_name


def publish_training_table(key: str, run_dir: Path) -> None:
    rows = pq.read_table(run_dir / METRICS_PARQUET).to_pylist()
    stride = max(1, len(rows) // MAX_TABLE_ROWS)
    publish_table(key, rows[::stride], description=f"training metrics of {run_dir}")


def _train_and_publish(
    data_dir: str,
    run_dir: Path,
    label: str,
    model_config: MusicConfig,
    train_config: TrainConfig,
    launch: LaunchConfig,
    compiled: bool,
) -> dict[str, Any]:
    """Train (or resume) one run on the tokens of `data_dir` with a progress artifact, in this
    process or, for more than one, in the ranks `launch` starts; then its training table and a
    log line. `label` names the artifacts."""
    tokens_dir = Path(data_dir) / "symbolic" / "tokens"
    splits = tokens_dir / "train.parquet", tokens_dir / "valid.parquet"
    logger = get_run_logger()
    logger.info("training %s: %s, %s", run_dir, model_config, train_config)
    progress = Progress(f"train-{label}")
    if launch.world_size == 1:
        result = train(
            run_dir, *splits, model_config, train_config, progress, logger.info, compiled=compiled
        )
    else:
        args = rank_args(run_dir, *splits, model_config, train_config, compiled)
        result = launch_training(launch, TRAIN_MODULE, args, progress, logger.info)
        if not launch.writes_outputs:  # rank 0's machine writes and reports the run
            logger.info("this node's ranks of %s are done", run_dir)
            return {"run_dir": str(run_dir), "finished": False}
    publish_training_table(f"symbolic-train-{label}", run_dir)
    logger.info(
        "trained %d steps (%d tokens) in %.0f s at %.0f tokens/s on %s",
        result["steps"],
        result["tokens_trained"],
        result["seconds"],
        result["tokens_per_s"],
        result["device"],
    )
    return result


def run_configs(
    vocab: Vocab, profile: str, seed: int, init_from: str | None = None
) -> tuple[MusicConfig, TrainConfig]:
    """The profile's model and training configs; fine-tuning (`init_from`, a model directory)
    keeps that model's architecture and needs its vocabulary to be the data's."""
    model_config, train_config = profile_configs(profile, vocab.size, seed)
    if init_from is None:
        return model_config, train_config
    own_vocab = Path(init_from) / VOCAB_FILE
    if own_vocab.is_file() and Vocab.from_json(own_vocab.read_text()) != vocab:
        raise ValueError(
            f"{own_vocab}: the model to fine-tune reads another vocabulary than the data's "
            "(tokenize the corpus with its steps per beat, durations and shifts)"
        )
    return load_config(init_from, MusicConfig), dataclasses.replace(
        train_config, init_from=str(init_from)
    )


def run_name(profile: str, seed: int, init_from: str | None = None) -> str:
    """`<profile>-seed<seed>`, or `<profile>-from-<model>-seed<seed>` for a fine-tuning run."""
    start = f"-from-{Path(init_from).name}" if init_from else ""
    return f"{profile}{start}-seed{seed}"


@task(name="symbolic-train", cache_policy=NO_CACHE)
def train_symbolic_model(
    data_dir: str,
    profile: str,
    seed: int,
    init_from: str | None = None,
    launch: LaunchConfig = LaunchConfig(),
    compiled: bool = False,
) -> dict[str, Any]:
    """Train the model (resuming a killed run; from the weights of `init_from` when given;
    data-parallel over the ranks of `launch`, through torch.compile when `compiled`);
    `train_symbolic_baseline` trains its baseline."""
    tokens_dir, vocab = symbolic_paths(data_dir)
    run_dir = symbolic_run_dir(data_dir, run_name(profile, seed, init_from))
    model_config, train_config = run_configs(vocab, profile, seed, init_from)
    # A run belongs to the tokens it was trained on: when the data stage has rebuilt them since
    # (a file added, a parameter changed), the old run (its baseline too) is trained afresh.
    configs = [dataclasses.asdict(model_config), dataclasses.asdict(train_config)]
    data_key = sha256_json([read_stamp(tokens_dir.parent), *configs])
    if launch.writes_outputs:  # other nodes' ranks only join the run rank 0's node set up
        reuse_stamp(run_dir, data_key, clear_stale=True)
        # The run carries its vocabulary, so `--model` on it needs nothing else to generate.
        write_bytes_atomic(run_dir / VOCAB_FILE, vocab.to_json().encode())
    result = _train_and_publish(
        data_dir, run_dir, run_dir.name, model_config, train_config, launch, compiled
    )
    if result["finished"]:
        write_stamp(run_dir, data_key)
    return result


@task(name="symbolic-train-baseline", cache_policy=NO_CACHE)
def train_symbolic_baseline(
    data_dir: str,
    run_dir: str,
    profile: str,
    seed: int,
    init_from: str | None = None,
    launch: LaunchConfig = LaunchConfig(),
    compiled: bool = False,
) -> dict[str, Any]:
    """Train the vanilla Transformer of the run in `run_dir` (same size, stream, steps and
    batch: the same token budget) into `run_dir/baselines/vanilla_transformer`; always from a
    random init (a fine-tuned model's baseline has no weights to start from)."""
    _, vocab = symbolic_paths(data_dir)
    model_config, train_config = run_configs(vocab, profile, seed, init_from)
    train_config = dataclasses.replace(train_config, init_from=None)
    label = f"{Path(run_dir).name}-vanilla"
    vanilla = model_config.vanilla()
    return _train_and_publish(
        data_dir, Path(run_dir) / VANILLA_DIR, label, vanilla, train_config, launch, compiled
    )


@task(name="symbolic-evaluate", cache_policy=NO_CACHE)
def evaluate_symbolic_model(
    data_dir: str, run_dir: str, original_keys: bool = False
) -> dict[str, Any]:
    """Valid/test NLL, perplexity and accuracy of the model and both baselines (in every key,
    or the original keys only), and the musicality of their continuations of held-out test
    prompts beside the real ones (metrics.json, table artifacts, musicality.png)."""
    tokens_dir, _ = symbolic_paths(data_dir)
    vocab = model_vocab(run_dir, data_dir)
    metrics = evaluate_run(run_dir, tokens_dir, vocab=vocab, original_keys=original_keys)
    rows = [{"model": "music_transformer", **scalars(metrics)}] + [
        {"model": name, **scalars(scores)} for name, scores in metrics["baselines"].items()
    ]
    publish_table(
        f"symbolic-evaluate-{Path(run_dir).name}",
        rows,
        description="NLL per token (nats), perplexity and next-token accuracy; same splits",
    )
    by_key = {"music_transformer": metrics, **metrics["baselines"]}
    publish_table(
        f"symbolic-evaluate-by-transpose-{Path(run_dir).name}",
        [
            {
                "transpose": int(key),
                **{name: m["test_by_transpose"][key]["nll"] for name, m in by_key.items()},
            }
            for key in metrics["test_by_transpose"]
        ],
        description="test NLL per token by transposition (semitones), model and baselines",
    )
    study = metrics["musicality"]
    outputs = {"run_dir": run_dir, "metrics": str(Path(run_dir) / METRICS_JSON)}
    if study["n_prompts"]:
        publish_table(
            f"symbolic-musicality-study-{Path(run_dir).name}",
            study_rows(study),
            description=f"MusPy's figures of continuations of {study['n_prompts']} held-out "
            "test prompts: the real continuation, the model and its baselines (means)",
        )
        outputs["musicality_png"] = str(Path(run_dir) / MUSICALITY_PNG)
    get_run_logger().info(
        "test NLL %.4f, accuracy %.4f; continuations of %d held-out prompts in their key: %s",
        metrics["test_nll"],
        metrics["test_accuracy"],
        study["n_prompts"],
        {s: f["in_prompt_key"] for s, f in study["sources"].items()},
    )
    return {**outputs, **scalars(metrics)}


def scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("nll", "ppl", "accuracy", "tokens")
    return {f"{s}_{k}": metrics[f"{s}_{k}"] for s in ("valid", "test") for k in keys}


@task(name="symbolic-generate", cache_policy=NO_CACHE)
def generate_continuation(
    data_dir: str,
    run_dir: str,
    prompt: str = "pachelbel",
    prompt_bars: int = 4,
    length: int = 512,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Continue a prompt ("pachelbel", a MIDI path or a piece id); .mid, .wav, .png in reports/.
    A model directory with its own vocab.json (a pretrained one) needs nothing else from
    `data_dir` unless the prompt is a piece id of its tokens."""
    tokens_dir = Path(data_dir) / "symbolic" / "tokens"
    outputs = generate(
        run_dir,
        model_vocab(run_dir, data_dir),
        tokens_dir if tokens_dir.is_dir() else None,
        Path(data_dir) / "reports",
        prompt=prompt,
        prompt_bars=prompt_bars,
        length=length,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )
    midi = Path(outputs["midi"])
    outputs["wav"] = str(render_midi_to_wav(midi, midi.with_suffix(".wav")))
    figures = outputs["musicality"]
    publish_table(
        f"symbolic-musicality-{midi.stem}",
        [
            {"figure": name, "prompt": figures[f"prompt_{name}"], "continuation": value}
            for name, value in figures.items()
            if f"prompt_{name}" in figures
        ],
        description="MusPy's figures of the continuation beside its prompt's; "
        f"in the prompt's key: {figures['in_prompt_key']}, density ratio: "
        f"{figures['density_ratio']}",
    )
    get_run_logger().info(
        "generated %d notes after %s: %s; in the prompt's key %s, pitch-class entropy %s bits "
        "(prompt %s), %sx the prompt's notes per beat",
        outputs["notes"],
        prompt,
        midi,
        figures["in_prompt_key"],
        figures["pitch_class_entropy"],
        figures["prompt_pitch_class_entropy"],
        figures["density_ratio"],
    )
    return outputs


@task(name="symbolic-jsb-benchmark", cache_policy=NO_CACHE)
def jsb_benchmark(
    jsb_path: str, data_dir: str, profile: str, seed: int, recipe: JsbRecipe | None = None
) -> dict[str, Any]:
    """Train and score on Coconet's JSB split; valid NLL per token beside the published ones.
    `recipe` (the shipped model's: transposed training chorales, dropout, steps) names its run
    `<recipe.name>-seed<seed>`; without one the profile's settings train `<profile>-seed<seed>`."""
    run_name = f"{recipe.name if recipe else profile}-seed{seed}"
    out_dir = Path(data_dir) / "models" / "jsb" / run_name
    logger = get_run_logger()
    options = dataclasses.asdict(recipe) if recipe else {}
    options.pop("name", None)
    result = run_jsb_benchmark(
        jsb_path, out_dir, profile, seed, Progress(f"jsb-{run_name}"), logger.info, **options
    )
    rows = [
        {
            "model": "ours: music transformer",
            "valid_nll": result["valid_nll"],
            "source": "this run",
        },
        *(
            {"model": f"ours: {name}", "valid_nll": nll, "source": "this run"}
            for name, nll in result["baselines_valid_nll"].items()
        ),
        *(
            {"model": name, "valid_nll": nll, "source": "Huang et al. 2018, Table 1"}
            for name, nll in PUBLISHED.items()
        ),
    ]
    publish_table(f"jsb-{run_name}", rows, description="JSB valid NLL per token")
    logger.info("JSB valid NLL %.4f (published: %s)", result["valid_nll"], PUBLISHED)
    return result


@task(name="symbolic-jsb-evaluate", cache_policy=NO_CACHE)
def jsb_evaluate(
    jsb_path: str, data_dir: str, run_dir: str, key_ensemble: int = 0
) -> dict[str, Any]:
    """Score a saved model (no training) on Coconet's JSB valid and test splits (and averaged
    over keys with `key_ensemble` > 0)."""
    tokens_dir = Path(data_dir) / "models" / "jsb" / "tokens"
    result = score_jsb_model(jsb_path, run_dir, tokens_dir, key_ensemble)
    keys = ("valid_nll", "test_nll", "valid_nll_key_ensemble", "test_nll_key_ensemble")
    publish_table(
        f"jsb-evaluate-{Path(run_dir).name}",
        [{k: result[k] for k in (*keys, "valid_accuracy", "test_accuracy") if k in result}],
        description=f"JSB NLL per token (nats) of {run_dir}; published: {PUBLISHED}",
    )
    get_run_logger().info(
        "JSB valid NLL %.4f, test NLL %.4f", result["valid_nll"], result["test_nll"]
    )
    return result
