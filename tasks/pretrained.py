"""Tasks that turn trained runs into the models shipped under models/pretrained/.

Each gathers the run's numbers, writes its model card (`models.pretrained`) and replaces the
shipped directory only when the headline metric improves on the shipped one (or `force`):
every committed weight stays in git history, so weights are recommitted only for better numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from datasets.symbolic.jsb import serialization_json
from datasets.symbolic.tokenizer import VOCAB_FILE
from models.audio.calibrate import CALIBRATED_SETTINGS, CALIBRATION_FILE
from models.audio.evaluate import METRICS as AUDIO_METRICS
from models.audio.evaluate import evaluate_wide_inputs
from models.audio.gate import GATE_FILE, ROUTE_GAIN_DB, ROUTE_TOLERANCE_DB
from models.audio.metrics import lsd_parts_mean_at_spline_snr
from models.audio.mismatch import filter_robustness
from models.audio.train import CHECKPOINT_DIR, TRAIN_JSON
from models.audio.train import train_seconds as audio_train_seconds
from models.audio.train import trained_steps as audio_trained_steps
from models.checkpoint import CONFIG_FILE, has_checkpoint
from models.pretrained import (
    METRICS_FILE,
    ModelCard,
    export_pretrained,
    hardware,
    improves_on_shipped,
)
from models.symbolic.jsb import PUBLISHED, score_jsb_model
from models.symbolic.run import METRICS_JSON, train_seconds, trained_steps
from models.symbolic.train import TRAIN_CONFIG_FILE
from tasks.common import publish_table

# Semitones up and down the shipped JSB model's key-averaged figures mix.
KEY_ENSEMBLE = 3
# The robustness study of the shipped super-resolution model: the first test files (by id, so
# drawn across the corpus's parts), their first seconds, under each of 6 filters.
ROBUSTNESS_FILES, ROBUSTNESS_SECONDS = 150, 10.0


def training_stages(run_dir: Path) -> list[Path]:
    """The run directories whose training made `run_dir`'s weights, first stage first (a run
    started from another's weights, `init_from`, follows it)."""
    init_from = json.loads((run_dir / TRAIN_CONFIG_FILE).read_text()).get("init_from")
    return [*training_stages(Path(init_from)), run_dir] if init_from else [run_dir]


def _wall_time(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded (a run resumed from a checkpoint older than the record)"
    return f"{seconds / 60:.0f} min of training"


def _export(
    run_dir: Path, out_dir: Path, card: ModelCard, metrics: dict, texts: dict, force: bool
) -> dict[str, Any]:
    """Export unless the shipped model's headline (the card's first metric) is as good."""
    name = card.name
    headline, value = next(iter(card.metrics.items()))
    logger = get_run_logger()
    if not force and not improves_on_shipped(out_dir, headline, value):
        logger.info("%s: %s %.4f is no better than the shipped one; kept", name, headline, value)
        return {"name": name, "exported": False, headline: value, "out_dir": str(out_dir)}
    export_pretrained(run_dir, out_dir, card, metrics, texts)
    publish_table(
        f"pretrained-{name}",
        [{"metric": key, "value": value} for key, value in card.metrics.items()],
        description=f"the model exported to {out_dir}",
    )
    logger.info("%s: exported to %s (%s %.4f)", name, out_dir, headline, value)
    return {"name": name, "exported": True, headline: value, "out_dir": str(out_dir)}


@task(name="pretrained-export-jsb", cache_policy=NO_CACHE)
def export_jsb_model(
    result: dict[str, Any], out_dir: str, command: str, force: bool = False
) -> dict[str, Any]:
    """The JSB benchmark run of `result` (`symbolic-jsb-benchmark`) as a shipped model."""
    run_dir = Path(result["run_dir"])
    stages = training_stages(run_dir)
    seconds = [train_seconds(stage) for stage in stages]
    keys = ("valid_nll", "test_nll", "valid_accuracy", "test_accuracy", "params")
    ensemble = score_jsb_model(result["jsb_path"], run_dir, run_dir.parent / "scored", KEY_ENSEMBLE)
    ensemble_keys = ("key_ensemble", "valid_nll_key_ensemble", "test_nll_key_ensemble")
    metrics = {key: result[key] for key in keys} | {key: ensemble[key] for key in ensemble_keys}
    metrics |= {
        "unit": "mean NLL in nats per token after bos, each chorale on its own (Huang et al. 2018)",
        "pieces": result["pieces"],
        "steps": sum(trained_steps(stage) for stage in stages),
        "stages": [
            {"run": "/".join(stage.parts[-2:]), "steps": trained_steps(stage)} for stage in stages
        ],
        "train_seconds": None if None in seconds else sum(seconds),
        "published_valid_nll": PUBLISHED,
    }
    card = ModelCard(
        name="jsb",
        summary="The music Transformer (relative attention, Transformer-XL memory, beat "
        "embedding) trained on the JSB chorales for the Music Transformer paper's benchmark.",
        data=f"Coconet's `Jsb16thSeparated.json`, its own 229/76/77 split; training chorales "
        f"in every key their four voices fit ({result['pieces']['train']} sequences); valid and "
        "test as given. Serialization in `vocab.json`.",
        command=command,
        steps=metrics["steps"],
        wall_time=_wall_time(metrics["train_seconds"]),
        hardware=hardware(),
        metrics={
            "valid_nll": result["valid_nll"],
            "test_nll": result["test_nll"],
            "valid_accuracy": result["valid_accuracy"],
            f"valid_nll averaged over {2 * KEY_ENSEMBLE + 1} keys": metrics[
                "valid_nll_key_ensemble"
            ],
            f"test_nll averaged over {2 * KEY_ENSEMBLE + 1} keys": metrics["test_nll_key_ensemble"],
            "parameters": result["params"],
            **{f"published {k} (valid)": v for k, v in PUBLISHED.items()},
        },
        notes=[
            "Score it: `python -m flows.symbolic --jsb ../shared/data/jsb/Jsb16thSeparated.json "
            f"--stages evaluate --model models/pretrained/jsb --jsb-key-ensemble {KEY_ENSEMBLE}`",
            "valid_nll and test_nll are one pass of the model, as the published figures are. "
            f"The figures averaged over keys mix the model's probabilities for the chorale "
            f"transposed by -{KEY_ENSEMBLE}..+{KEY_ENSEMBLE} semitones (a fixed set: the "
            f"mixture never looks ahead), at {2 * KEY_ENSEMBLE + 1}x the compute.",
        ],
    )
    texts = {VOCAB_FILE: serialization_json()}
    return _export(run_dir, Path(out_dir), card, metrics, texts, force)


@task(name="pretrained-export-music21", cache_policy=NO_CACHE)
def export_music21_model(
    result: dict[str, Any], out_dir: str, command: str, force: bool = False
) -> dict[str, Any]:
    """The run of a symbolic flow `result` on `--corpus music21` as the shipped general
    continuation model, with its vocabulary and the musicality study of its evaluation."""
    run_dir = Path(result["run_dir"])
    evaluation = json.loads((run_dir / METRICS_JSON).read_text())
    study = evaluation["musicality"]
    if not study["n_prompts"]:
        raise ValueError(
            f"{run_dir / METRICS_JSON}: the musicality study found no test piece long enough; "
            "a shipped continuation model needs it measured"
        )
    model, real = study["sources"]["music_transformer"], study["sources"]["real"]
    baselines = evaluation["baselines"]
    metrics = {
        "test_nll": evaluation["test_nll"],
        "valid_nll": evaluation["valid_nll"],
        "test_accuracy": evaluation["test_accuracy"],
        "baselines_test_nll": {name: b["test_nll"] for name, b in baselines.items()},
        "params": evaluation["params"],
        "steps": trained_steps(run_dir),
        "train_seconds": train_seconds(run_dir),
        "pieces": {s: result[f"pieces_{s}"] for s in ("train", "valid", "test")},
        "rejected_files": result["n_rejected"],
        "musicality": {k: v for k, v in study.items() if k != "per_prompt"},
    }
    card = ModelCard(
        name="music21",
        summary="A general prompt-continuation model: the music Transformer trained on every "
        "work of music21's bundled corpus that parses, in all 12 keys.",
        data=f"`--corpus music21`: chorales, Palestrina, Monteverdi, Renaissance to Classical "
        f"works and thousands of folk tunes in abc; split per work ({result['pieces_train']} "
        f"train, {result['pieces_valid']} valid, {result['pieces_test']} test pieces; "
        f"{result['n_rejected']} files rejected, listed in the run's manifest).",
        command=command,
        steps=metrics["steps"],
        wall_time=_wall_time(metrics["train_seconds"]),
        hardware=hardware(),
        metrics={
            "test_nll": evaluation["test_nll"],
            **{f"{name} test_nll": b["test_nll"] for name, b in baselines.items()},
            "parameters": evaluation["params"],
            "held-out prompts": study["n_prompts"],
            "in prompt key (model / real)": f"{model['in_prompt_key']} / {real['in_prompt_key']}",
            "pitch-class entropy, bits (model / real)": (
                f"{model['pitch_class_entropy']} / {real['pitch_class_entropy']}"
            ),
            "density ratio (model / real)": (f"{model['density_ratio']} / {real['density_ratio']}"),
        },
        notes=[
            "Continue a MIDI file: `python -m flows.symbolic --stages generate --model "
            "models/pretrained/music21 --prompt my.mid`",
            "Musicality: continuations of the first 4 bars of held-out test works, 8 bars "
            "long, MusPy's definitions (`models/symbolic/musicality_study.py`).",
        ],
    )
    texts = {VOCAB_FILE: (run_dir / VOCAB_FILE).read_text()}
    return _export(run_dir, Path(out_dir), card, metrics, texts, force)


def _audio_row(summary: dict[str, Any]) -> dict[str, float]:
    """A summary's model and baseline figures, flat: lsd, sinc_lsd, spline_snr_db, ..."""
    row = {key: round(summary[key], 3) for key in AUDIO_METRICS}
    for name, baseline in summary["baselines"].items():
        row |= {f"{name}_{key}": round(baseline[key], 3) for key in AUDIO_METRICS}
    return row


def _level_note(metrics: dict[str, Any]) -> str:
    """How the card's model sets the level of the band it paints, for its notes."""
    gain, budget = metrics["high_band_gain"], metrics["high_band_budget"]
    if budget is None:
        return (
            f"at the level {gain}, the largest at which the SNR is at least the spline's on "
            "every part."
        )
    return (
        "at a level per input: the largest, up to the trained level, at which the painted "
        f"band's energy is at most {budget} times the energy by which the output below 2 kHz "
        f"corrects the spline input. {budget} is the largest budget at which the SNR is at "
        "least the spline's on every part, and its LSD there was lower than at the best single "
        f"level ({gain})."
    )


def _network_training(directory: Path) -> tuple[int, float | None]:
    """The steps and training seconds of a run; of a shipped model directory (a network taken
    from an earlier card, which keeps no checkpoint), what its metrics.json recorded."""
    if has_checkpoint(directory / CHECKPOINT_DIR):
        return audio_trained_steps(directory), audio_train_seconds(directory)
    shipped = json.loads((directory / METRICS_FILE).read_text())
    return int(shipped["steps"]), shipped.get("train_seconds")


def _gate_notes(run_dir: Path, metrics: dict[str, Any]) -> list[str]:
    """What the card says of a gated model: its networks' runs, their storage and the gate."""
    record = json.loads((run_dir / GATE_FILE).read_text())
    runs = ", ".join(
        f"`{name}` ({steps} steps)" for name, steps in metrics["steps_per_run"].items()
    )
    route = record.get("route")
    use = (
        "each input goes whole to one network: the U-Net where the mean of its blocks' gate "
        f"weights is above {route['threshold']}, the highest threshold that sent it every "
        f"validation file it gained {ROUTE_GAIN_DB:g} dB of SNR on against the spectral model "
        f"and none it lost more than {ROUTE_TOLERANCE_DB:g} dB on (the files in {GATE_FILE}); "
        "the U-Net runs in bfloat16 on a CPU that has it."
        if route
        else "each network runs only where its output has a share."
    )
    return [
        f"Trained runs: {runs}; the steps above are their sum. The U-Net's weights are stored "
        "in float16. The gate (its coefficients in the weights file, its fit in "
        f"{GATE_FILE}) was fitted on training files ({record['fit']['seconds']:g} s of every "
        f"n-th per part); {use}",
    ]


@task(name="pretrained-export-superres", cache_policy=NO_CACHE)
def export_superres_model(
    result: dict[str, Any], corpus: str, out_dir: str, command: str, force: bool = False
) -> dict[str, Any]:
    """The run of an audio flow `result` (trained and evaluated on `corpus`, a mix) as the
    shipped super-resolution model, with its figures per part and its filter robustness. A
    gated model (`models.audio.gated`) names the runs that trained its networks in
    `result["network_runs"]`."""
    run_dir, data_dir = Path(result["run_dir"]), result["data_dir"]
    networks = [Path(d) for d in result.get("network_runs", [run_dir])]
    trained = {d.name: _network_training(d) for d in networks}
    seconds = [s for _, s in trained.values()]
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    gated = "spectral" in config
    evaluation = json.loads((run_dir / "metrics.json").read_text())
    robustness = filter_robustness(run_dir, data_dir, "test", ROBUSTNESS_FILES, ROBUSTNESS_SECONDS)
    wide = evaluate_wide_inputs(run_dir, data_dir, "test")
    sources = evaluation.get("by_source", {})
    metrics = {
        **_audio_row(evaluation),
        "by_source": {
            name: _audio_row(part) | {"n_files": part["n_files"]} for name, part in sources.items()
        },
        "unit": "LSD: log10 power spectra, NU-Wave's definition; lsd_hf: above the input's "
        "Nyquist frequency; snr_db: of the waveform; means over whole test files",
        "n_files": evaluation["n_files"],
        "eval_filter": evaluation["filter"],
        "files": {s: result[f"files_{s}"] for s in ("train", "valid", "test")},
        "hr_seconds": result["hr_seconds"],
        "rejected_files": result["n_rejected"],
        "steps": sum(steps for steps, _ in trained.values()),
        "steps_per_run": {name: steps for name, (steps, _) in trained.items()},
        "train_seconds": None if None in seconds else sum(seconds),
        "robustness": robustness,
        "wide_input": {
            "input_rate": wide["input_rate"],
            **_audio_row(wide),
            "by_source": {name: _audio_row(part) for name, part in wide["by_source"].items()},
        },
    }
    metrics |= {key: config.get("spectral", config).get(key) for key in CALIBRATED_SETTINGS}
    # LSD averaged over the corpus's parts, not over files, of which three in four are speech:
    # a model that gains on music and renders should count. The export's headline counts a
    # part only where the SNR holds the spline's (the aim has both sides).
    metrics["lsd_parts_mean"] = round(
        float(np.mean([part["lsd"] for part in metrics["by_source"].values()])), 3
    )
    metrics["lsd_parts_mean_at_spline_snr"] = round(
        lsd_parts_mean_at_spline_snr(metrics["by_source"]), 3
    )
    parts = {"all": _audio_row(evaluation), **metrics["by_source"]}
    headline = {
        f"{name}: test LSD (model / sinc / spline)": (
            f"{row['lsd']} / {row['sinc_lsd']} / {row['spline_lsd']}"
        )
        for name, row in parts.items()
    } | {
        f"{name}: test SNR dB (model / spline)": f"{row['snr_db']} / {row['spline_snr_db']}"
        for name, row in parts.items()
    }
    rate = f"{wide['input_rate'] / 1000:g} kHz inputs"
    headline |= {
        f"{name} at {rate}: test LSD (model / sinc / spline), SNR dB (model / spline)": (
            f"{row['lsd']} / {row['sinc_lsd']} / {row['spline_lsd']}, "
            f"{row['snr_db']} / {row['spline_snr_db']}"
        )
        for name, row in metrics["wide_input"]["by_source"].items()
    }
    card = ModelCard(
        name="superres-x4-16k",
        summary="Audio super-resolution from 4 to 16 kHz: the spectral bandwidth extender "
        "(amplitude and phase streams of ConvNeXt blocks, after AP-BWE) trained on real speech, "
        "real music and FluidSynth renders, with a randomly chosen anti-aliasing filter per file"
        + (
            (
                "; beside it a U-Net on the waveform, and a gate that sends a whole input to the "
                "U-Net where the input's spectrum, 256 ms block by block, says the U-Net is right "
                "(a logistic regression fitted on training files)."
                if config.get("route_above") is not None
                else "; beside it a U-Net on the waveform, and a gate that moves the output "
                "toward the U-Net's, per 256 ms block, where the input's spectrum says the "
                "U-Net is right (a logistic regression fitted on training files)."
            )
            if gated
            else "."
        ),
        data=f"`--corpus {corpus}` (the recordings fetched from Debian and npm "
        f"packages, checked for full bandwidth, split by speaker or song; the chorale renders "
        f"split per file): {metrics['files']['train']} train, {metrics['files']['valid']} "
        f"valid, {metrics['files']['test']} test files, {result['hr_seconds'] / 3600:.1f} h in "
        "all.",
        command=command,
        steps=metrics["steps"],
        wall_time=_wall_time(metrics["train_seconds"]),
        hardware=hardware(),
        metrics={
            "lsd_parts_mean_at_spline_snr": metrics["lsd_parts_mean_at_spline_snr"],
            "lsd_parts_mean": metrics["lsd_parts_mean"],
            "lsd": metrics["lsd"],
            **headline,
            "SNR gain over the spline on unseen filters, dB (worst / seen mean)": (
                f"{robustness['worst_unseen_gain_db']} / {robustness['seen_gain_db']}"
            ),
        },
        notes=(_gate_notes(run_dir, metrics) if gated else [])
        + [
            "Super-resolve a file: `python -m flows.audio --input my.wav --output my-16k.wav "
            "--model models/pretrained/superres-x4-16k` (any rate and length; no server).",
            f"Robustness: {ROBUSTNESS_FILES} test files (first {ROBUSTNESS_SECONDS:.0f} s each) "
            "made with each training filter and with a Butterworth and an elliptic filter no "
            "training set uses; the per-filter table is under `robustness` in metrics.json.",
            f"Calibrated on validation files (`models.audio.calibrate`; the tables: "
            f"{CALIBRATION_FILE}): the output keeps the input's own band up to "
            f"{metrics['pass_below_sharp_edge']} of its Nyquist frequency where the input has "
            "a sharp band edge (as a high-quality resampler such as soxr leaves it), else up to "
            f"{metrics['pass_below']}, the shares with the best SNR over the training filters; "
            f"and the band above 2 kHz {_level_note(metrics)} "
            "`--high-band-gain 1` paints it at the trained level for one file: brighter, a lower "
            "LSD, a lower SNR.",
            "Wider inputs (any rate between 4 and 16 kHz): the output keeps the input's own band "
            "up to its Nyquist frequency and paints the band above at the level "
            f"{metrics['wide_input_gain']}, calibrated on the same validation files at "
            f"{wide['input_rate'] / 1000:g} kHz; scored on the whole test files at that rate "
            "under `wide_input` in metrics.json.",
        ],
    )
    # train.json names the filter its pairs were made with: what `--stages evaluate` and the
    # examples degrade the reference with when they are given this directory.
    names = (TRAIN_JSON, CALIBRATION_FILE, *([GATE_FILE] if gated else []))
    texts = {name: (run_dir / name).read_text() for name in names}
    return _export(run_dir, Path(out_dir), card, metrics, texts, force)
