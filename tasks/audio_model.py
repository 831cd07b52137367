"""Tasks of the audio super-resolution model: train (and calibrate the spectral model's
inference bands), gate a spectral model and a U-Net, evaluate, super-resolve, filter mismatch.

Thin wrappers over `models.audio`: each takes paths and a profile, hands back a small record,
shows training progress as a progress artifact and metrics as table artifacts. A run directory
is `data_dir/models/audio/<run>`; training resumes a killed run from its checkpoint, and is
skipped when its stamp says the same config already finished on the same pairs dataset.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from datasets.audio.signals import FILTERS
from datasets.io import PROJECT_ROOT, code_version, sha256_file, sha256_json
from datasets.stamps import read_stamp, reuse_stamp, write_stamp
from models.audio import bwe, gate, gated, infer, mismatch
from models.audio import calibrate as calibration
from models.audio import config as model_configs
from models.audio import metrics as audio_metrics
from models.audio.calibrate import CALIBRATED_SETTINGS, CALIBRATION_LIMITS, calibrate
from models.audio.config import EVAL_LIMITS, profile_config
from models.audio.data import read_pairs_info
from models.audio.evaluate import evaluate_run, side_by_side, write_examples
from models.audio.infer import latest_run, superresolve_file
from models.audio.train import METRICS_FILE, rank_args, start_digest, train_audio_unet
from models.checkpoint import CONFIG_FILE, MODEL_FILE
from models.distributed import LaunchConfig, launch_training
from tasks.common import Progress, publish_table

# Runs resume from their own checkpoints and stamps; Prefect's cache would hash big inputs.
MAX_TABLE_ROWS = 60
# What torchrun starts on each rank of a data-parallel run.
TRAIN_MODULE = "models.audio.train"
# The pretrained 4 -> 16 kHz model `--input` falls back to without a trained run.
SHIPPED_AUDIO_MODEL = "models/pretrained/superres-x4-16k"
# Real recordings the shipped model never trained on, super-resolved by every superres stage.
DEMO_RECORDINGS = PROJECT_ROOT / "datasets" / "audio" / "demo"


def pairs_dir(data_dir: str) -> Path:
    return Path(data_dir) / "audio" / "pairs"


def models_dir(data_dir: str) -> Path:
    return Path(data_dir) / "models" / "audio"


def calibration_code_version() -> str:
    """The source of the modules a calibration runs: its tables, the model at inference and
    the metrics it chooses by."""
    return code_version(calibration, bwe, infer, model_configs, audio_metrics)


def _train(
    pairs: Path,
    run_dir: Path,
    profile: str,
    seed: int,
    data_key: str | None,
    launch: LaunchConfig = LaunchConfig(),
    compiled: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train unless the run's stamp says this config already finished on this data: in this
    process, or data-parallel in the ranks `launch` starts."""
    config = profile_config(profile, seed, **overrides)
    # The spectral model's run ends with its calibration, so the code that calibrates is part of
    # what the stamp vouches for: a changed calibration recalibrates the finished run (resumed
    # from its last checkpoint, no step trained) instead of keeping the old choice.
    calibrated = [calibration_code_version()] if overrides.get("arch") == "bwe" else []
    # The weights a fine-tuning run starts from, by content: new ones at the same path retrain.
    start = [] if config.init_from is None else [start_digest(config.init_from)]
    key = sha256_json([dataclasses.asdict(config), data_key, *calibrated, *start])
    recorded = reuse_stamp(run_dir, key, [run_dir / "config.json"])
    logger = get_run_logger()
    if recorded is not None:
        logger.info("%s is trained and current; not retraining", run_dir)
        return recorded | {"reused": True}
    progress = Progress(f"train-{run_dir.name}")
    if launch.world_size == 1:
        summary = train_audio_unet(pairs, run_dir, config, progress=progress, compiled=compiled)
    else:
        args = rank_args(pairs, run_dir, config, compiled)
        summary = launch_training(launch, TRAIN_MODULE, args, progress, logger.info)
        if not launch.writes_outputs:  # rank 0's machine writes and stamps the run
            return {"run_dir": str(run_dir), "reused": False}
    if overrides.get("arch") == "bwe":
        # Before the stamp: a run killed while calibrating calibrates again when resumed.
        per_part, seconds = CALIBRATION_LIMITS[profile]
        record = calibrate(run_dir, pairs.parents[1], "valid", per_part, seconds)
        chosen = {key: record[key] for key in CALIBRATED_SETTINGS}
        logger.info("%s: %s on validation files", run_dir, chosen)
        summary |= chosen
    # The stamp is an output: the same run gives the same bytes, so no wall-clock time in it.
    write_stamp(run_dir, key, {k: v for k, v in summary.items() if k != "seconds"})
    return summary | {"reused": False}


@task(name="audio-train", cache_policy=NO_CACHE)
def train_audio_model(
    data_dir: str,
    profile: str = "quick",
    seed: int = 0,
    run_name: str | None = None,
    steps: int | None = None,
    arch: str = "unet",
    launch: LaunchConfig = LaunchConfig(),
    compiled: bool = False,
    init_from: str | None = None,
    keep_below: float | None = None,
    parts: list[str] | None = None,
    lr: float | None = None,
    part_exponent: float | None = None,
    preset: str | None = None,
) -> dict[str, Any]:
    """Train the U-Net (`arch` "unet") or the spectral bandwidth extender ("bwe", the
    `bwe-<profile>` preset; `preset`: another size) on `audio/pairs`, resuming a killed run;
    `steps` overrides the
    profile's; data-parallel over the ranks of `launch`, through torch.compile when
    `compiled`; from the weights of the model directory `init_from` when given (fine-tuning),
    with the U-Net's band below `keep_below` of the input's kept, on the corpus `parts` only,
    `lr` and `part_exponent` overriding the profile's (`AudioTrainConfig`); each named in the
    run's name: `<profile>[-<preset>]-x<ratio>-<filter>-seed<seed>-<parts>-kept<share>-lr<rate>
    -shares<exponent>-from-<directory>`."""
    logger = get_run_logger()
    pairs = pairs_dir(data_dir)
    info = read_pairs_info(pairs)
    prefix = "" if arch == "unet" else f"{arch}-"
    variant = "".join(
        [
            "" if parts is None else "-" + "+".join(parts),
            "" if keep_below is None else f"-kept{keep_below:g}",
            "" if lr is None else f"-lr{lr:g}",
            "" if part_exponent is None else f"-shares{part_exponent:g}",
            "" if init_from is None else f"-from-{Path(init_from).resolve().name}",
        ]
    )
    size = "" if preset is None else f"-{preset}"
    name = run_name or f"{prefix}{profile}{size}-x{info.ratio}-{info.filter}-seed{seed}{variant}"
    run_dir = models_dir(data_dir) / name
    given = {
        "steps": steps,
        "init_from": None if init_from is None else str(Path(init_from).resolve()),
        "keep_below": keep_below,
        "parts": None if parts is None else tuple(parts),
        "lr": lr,
        "part_exponent": part_exponent,
        "preset": preset,
    }
    overrides = {"arch": arch} | {k: v for k, v in given.items() if v is not None}
    data_key = read_stamp(Path(data_dir) / "audio")
    logger.info("training %s on %s (%s)", run_dir, pairs, info)
    summary = _train(pairs, run_dir, profile, seed, data_key, launch, compiled, **overrides)
    if not launch.writes_outputs:
        return summary
    rows = pq.read_table(run_dir / METRICS_FILE).to_pylist()
    stride = max(1, len(rows) // MAX_TABLE_ROWS)
    publish_table(
        f"audio-train-{name}",
        rows[::stride],
        description=f"training of {run_dir}: loss and held-out patch SNR vs the spline input",
    )
    if rows:
        logger.info(
            "step %d: patch SNR %.2f dB (spline %.2f dB)",
            rows[-1]["step"],
            rows[-1]["eval_snr_db"],
            rows[-1]["eval_spline_snr_db"],
        )
    return summary | {"run_dir": str(run_dir)}


@task(name="audio-gate", cache_policy=NO_CACHE)
def gate_audio_models(data_dir: str, spectral_dir: str, unet_dir: str) -> dict[str, Any]:
    """The gated model of a spectral run and a U-Net run (`models.audio.gate`: the gate fitted
    on the training files, its routing threshold on the validation files) at
    `models/audio/gated-<spectral run>+<U-Net run>`; reused while
    both runs' weights and configs and the gate's code are unchanged."""
    run_dir = models_dir(data_dir) / f"gated-{Path(spectral_dir).name}+{Path(unet_dir).name}"
    key = sha256_json(
        [
            sha256_file(Path(directory) / name)
            for directory in (spectral_dir, unet_dir)
            for name in (MODEL_FILE, CONFIG_FILE)
        ]
        + [code_version(gate, gated, infer, model_configs)]
    )
    recorded = reuse_stamp(run_dir, key, [run_dir / "config.json"])
    if recorded is not None:
        get_run_logger().info("%s is fitted and current; not refitting", run_dir)
        return recorded | {"reused": True}
    _, record = gate.write_gated_model(spectral_dir, unet_dir, data_dir, run_dir)
    route = record["route"]
    summary = {
        "run_dir": str(run_dir),
        "gate": record["gate"],
        "route_above": route["threshold"] if route else None,
    }
    write_stamp(run_dir, key, summary)
    return summary | {"reused": False}


@task(name="audio-evaluate", cache_policy=NO_CACHE)
def evaluate_audio_model(
    data_dir: str, run_dir: str, profile: str = "full", by_source: bool = False
) -> dict[str, Any]:
    """SNR, LSD and high-band LSD on the whole test files, beside the spline and sinc baselines
    (and per part of a mixed corpus, `by_source`); writes `metrics.json` in the run and a
    side-by-side table artifact."""
    max_files, max_seconds = EVAL_LIMITS[profile]
    metrics = evaluate_run(run_dir, data_dir, "test", max_files, max_seconds, sources=by_source)
    table = side_by_side(metrics)
    sources = metrics.get("by_source", {})
    if sources:
        publish_table(
            f"audio-eval-sources-{Path(run_dir).name}",
            [
                {"source": name, "n_files": part["n_files"], **row}
                for name, part in sources.items()
                for row in side_by_side(part)
            ],
            description="the test split per part of the mixed corpus",
        )
    publish_table(
        f"audio-eval-{Path(run_dir).name}",
        table,
        description=f"test split, {metrics['n_files']} files, x{metrics['ratio']}, "
        f"{metrics['filter']} filter: SNR dB (higher is better), LSD (lower is better)",
    )
    get_run_logger().info("evaluation of %s: %s", run_dir, table)
    return {
        "run_dir": run_dir,
        "metrics": str(Path(run_dir) / "metrics.json"),
        "n_files": metrics["n_files"],
        **{row["method"] + "_" + key: row[key] for row in table for key in row if key != "method"},
    }


@task(name="audio-examples", cache_policy=NO_CACHE)
def superresolve_examples(
    data_dir: str, run_dir: str, count: int = 2, max_seconds: float = 10.0
) -> list[dict[str, Any]]:
    """Low-res input, model output (WAV) and spectrogram PNG of the first test files in
    `reports/`."""
    examples = write_examples(
        run_dir, data_dir, Path(data_dir) / "reports", count, max_seconds=max_seconds
    )
    publish_table(f"audio-examples-{Path(run_dir).name}", examples, "super-resolved test files")
    return examples


@task(name="audio-superres-demo", cache_policy=NO_CACHE)
def superresolve_demos(data_dir: str, model_dir: str | None = None) -> list[dict[str, Any]]:
    """The real recordings of `DEMO_RECORDINGS` made 4 kHz and super-resolved by the shipped
    model (or `model_dir`): `reports/demo-<name>-sr.wav`, a spectrogram PNG against the
    recording, and SNR/LSD beside spline and sinc. Nothing when no model is shipped."""
    model = Path(model_dir) if model_dir else PROJECT_ROOT / SHIPPED_AUDIO_MODEL
    logger = get_run_logger()
    if not model.is_dir():
        logger.info("no model at %s: the demo recordings are not super-resolved", model)
        return []
    reports = Path(data_dir) / "reports"
    results = [
        superresolve_file(model, path, reports / f"demo-{path.stem}-sr.wav")
        for path in sorted(DEMO_RECORDINGS.glob("*.flac"))
    ]
    rows = [
        {"recording": Path(r["input"]).name, "method": method, **metrics}
        for r in results
        for method, metrics in r["metrics"].items()
    ]
    publish_table("audio-superres-demo", rows, f"real recordings super-resolved by {model}")
    return results


def resolve_model(data_dir: str, model: str | None) -> Path:
    """`model` (a run directory, or a run name under data_dir/models/audio), else the latest
    run, else the shipped model (`SHIPPED_AUDIO_MODEL`) when the checkout has it."""
    if model is None:
        try:
            return latest_run(models_dir(data_dir))
        except FileNotFoundError:
            if (PROJECT_ROOT / SHIPPED_AUDIO_MODEL).is_dir():
                return PROJECT_ROOT / SHIPPED_AUDIO_MODEL
            raise
    named = models_dir(data_dir) / model
    return named if named.is_dir() else Path(model)


def superresolve(
    input: str,
    output: str | None = None,
    data_dir: str = "data",
    model: str | None = None,
    high_band_gain: float | None = None,
) -> dict[str, Any]:
    """Super-resolve one audio file (any length, any rate): the WAV at `output` (default
    `reports/<input stem>-sr.wav`) and a spectrogram PNG beside it. For the command line.
    `high_band_gain` replaces the spectral model's calibrated high-band level."""
    run_dir = resolve_model(data_dir, model)
    target = Path(output) if output else Path(data_dir) / "reports" / f"{Path(input).stem}-sr.wav"
    png = Path(data_dir) / "reports" / f"{target.stem}.png"
    return superresolve_file(run_dir, input, target, png, high_band_gain)


@task(name="audio-superres-file", cache_policy=NO_CACHE)
def superresolve_file_task(
    input: str,
    output: str | None = None,
    data_dir: str = "data",
    model: str | None = None,
    high_band_gain: float | None = None,
) -> dict[str, Any]:
    """The task form of `superresolve`, for flows."""
    result = superresolve(input, output, data_dir, model, high_band_gain)
    get_run_logger().info("super-resolved %s -> %s", input, result["output"])
    return result


@task(name="audio-filter-mismatch", cache_policy=NO_CACHE)
def filter_mismatch(
    data_dir: str,
    profile: str = "quick",
    seed: int = 0,
    train_filters: tuple[str, ...] = (*FILTERS, "random"),
) -> dict[str, Any]:
    """Train one model per anti-aliasing filter (and `random`, one per file) on the same train
    files, evaluate each on test inputs made with every filter (`models.audio.mismatch`); a table
    artifact and `models/audio-mismatch/<profile>-seed<seed>.json`."""
    data_key = read_stamp(Path(data_dir) / "audio")
    logger = get_run_logger()
    result = mismatch.filter_mismatch(
        data_dir, profile, seed, _train, data_key, train_filters, logger.info
    )
    publish_table(
        f"audio-filter-mismatch-{profile}",
        result["rows"],
        description="model trained with train_filter, tested on inputs made with eval_filter; "
        "gain_db = model SNR - spline SNR on the same inputs",
    )
    return {
        "table": str(result["table"]),
        "rows": len(result["rows"]),
        "models": {k: str(v) for k, v in result["models"].items()},
    }
