"""Score super-resolution models on music no training file holds: pieces of music21's bundled
corpus other than the Bach chorales, rendered with FluidSynth as the chorale renders are (the
General MIDI piano) and, where the score names other instruments, with its own.

The chorale renders of the training mix are one texture (four voices, one sound font); this is
how a user's other MIDI fares. Each piece's first `MEASURES` measures are written as MIDI,
rendered at the model's rate, and brought down and back as the evaluation does (`degrade`
with the model's evaluation filter, then the model, the spline and the sinc); a gated model
also reports where its gate sent each render. A piece that cannot be written or rendered is
rejected with its reason and the rest go on. Measured in docs/AUDIO_MODEL.md (2026-12-04).

    python -m models.audio.foreign --model models/pretrained/superres-x4-16k [--model DIR ...] \
        --out-dir data/foreign
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import music21
import numpy as np
import soundfile as sf
from symusic import Score

from datasets.audio.pairs import degrade
from datasets.audio.render import render_midi_to_wav
from datasets.io import atomic_path, write_json_atomic
from models.audio.evaluate import METHODS, METRICS, eval_filter, reconstruct, run_pairs_info
from models.audio.gated import GatedExtender, route
from models.audio.infer import AudioModel, load_model
from models.audio.metrics import evaluate_pair
from models.audio.train import TRAIN_JSON

# String quartets, piano music, a madrigal and an aria: textures the chorales do not have.
PIECES = (
    "mozart/k80/movement1",
    "mozart/k155/movement1",
    "haydn/opus74no1/movement1",
    "beethoven/opus18no1/movement1",
    "beethoven/opus132",
    "beethoven/opus133",
    "chopin/mazurka06-2",
    "joplin/maple_leaf_rag",
    "monteverdi/madrigal.3.1",
    "handel/rinaldo/lascia_chio_pianga",
)
MEASURES = 24
PIANO = 0


def write_midi(piece: str, midi: Path) -> Path:
    """The first `MEASURES` measures of a music21 corpus piece as a MIDI file (once, written
    atomically)."""
    if not midi.exists():
        score = music21.corpus.parse(piece).measures(1, MEASURES)
        with atomic_path(midi) as tmp:
            score.write("midi", fp=str(tmp))
    return midi


def render_piece(piece: str, out_dir: Path, rate: int) -> dict[str, Path]:
    """The piece rendered as the piano and, where its MIDI names other programs, with its own
    instruments: {"piano": wav, "own": wav}, each written once."""
    name = piece.replace("/", "-")
    midi = write_midi(piece, out_dir / "midi" / f"{name}.mid")
    programs = {track.program for track in Score(str(midi)).tracks if not track.is_drum}
    renders = {"piano": PIANO, **({"own": None} if programs - {PIANO} else {})}
    wavs = {}
    for kind, program in renders.items():
        wav = out_dir / "wav" / f"{name}-{kind}-{rate}.wav"
        if not wav.exists():
            render_midi_to_wav(midi, wav, rate, program)
        wavs[kind] = wav
    return wavs


def score_render(model: AudioModel, hr: np.ndarray, filter: str) -> dict[str, Any]:
    """The model's, the spline's and the sinc's metrics on one render; for a gated model the
    network its gate sent the render to."""
    ratio = model.config.ratio
    lr = degrade(hr, ratio, filter)
    estimates = reconstruct(model, lr, len(hr))
    row: dict[str, Any] = {
        method: evaluate_pair(hr, estimate, ratio) for method, estimate in estimates.items()
    }
    if isinstance(model, GatedExtender) and model.config.route_above is not None:
        to_unet = route(model.block_weights(estimates["spline"]), model.config.route_above)
        row["routed_to"] = "unet" if to_unet else "spectral"
    return row


def score_foreign(
    model_dirs: list[str],
    out_dir: str | Path,
    seconds: float = 30.0,
    pieces: tuple[str, ...] = PIECES,
) -> dict[str, Any]:
    """Every model on every render of `pieces` (their first `seconds`): per render the
    metrics, and per model and kind of render the means of the SNR over the spline's and the
    LSD over the sinc's; the pieces that could not be rendered, with the reason."""
    out_dir = Path(out_dir)
    models = {directory: load_model(directory, "cpu") for directory in model_dirs}
    rates = {model.config.hr_rate for model in models.values()}
    renders, rejected = [], {}
    for rate in sorted(rates):
        for piece in pieces:
            try:
                wavs = render_piece(piece, out_dir, rate)
            except Exception as error:  # music21 and FluidSynth fail in many ways; go on
                rejected[piece] = f"{type(error).__name__}: {error}"
                continue
            renders += [(piece, kind, rate, wav) for kind, wav in wavs.items()]
    rows = []
    for directory, model in models.items():
        trained_with = (
            run_pairs_info(directory)["filter"]
            if (Path(directory) / TRAIN_JSON).is_file()
            else None
        )
        filter = eval_filter(trained_with or "soxr")
        for piece, kind, rate, wav in renders:
            if rate != model.config.hr_rate:
                continue
            hr, _ = sf.read(str(wav), dtype="float32")
            hr = hr[: int(seconds * rate)]
            rows.append(
                {"model_dir": directory, "piece": piece, "render": kind}
                | score_render(model, hr, filter)
            )
    return {"rows": rows, "summary": summarize(rows), "rejected": rejected, "seconds": seconds}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and kind of render: the mean SNR over the spline's (dB), the mean LSD over
    the sinc's mean, and the share of renders a gated model sent to its U-Net."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model_dir"], row["render"]), []).append(row)
    table = []
    for (model_dir, kind), group in groups.items():
        mean = {
            method: {key: float(np.mean([r[method][key] for r in group])) for key in METRICS}
            for method in METHODS
        }
        entry = {
            "model_dir": model_dir,
            "render": kind,
            "n_files": len(group),
            "snr_over_spline_db": round(mean["model"]["snr_db"] - mean["spline"]["snr_db"], 3),
            "lsd_over_sinc": round(mean["model"]["lsd"] / mean["sinc"]["lsd"], 3),
        }
        if "routed_to" in group[0]:
            entry["to_unet"] = round(float(np.mean([r["routed_to"] == "unet" for r in group])), 3)
        table.append(entry)
    return table


def main(argv: list[str] | None = None) -> None:
    """Render the pieces and score the models; prints the summary table as JSON and writes
    everything to `--out-dir`/foreign.json."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", action="append", required=True, help="a model directory")
    parser.add_argument("--out-dir", required=True, help="renders and the results go here")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    result = score_foreign(args.model, args.out_dir, args.seconds)
    write_json_atomic(Path(args.out_dir) / "foreign.json", result)
    print(json.dumps({"summary": result["summary"], "rejected": result["rejected"]}, indent=1))


if __name__ == "__main__":
    main()
