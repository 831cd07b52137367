"""Fit the gated model's gate (`models.audio.gated`) and write the model: a spectral model and a
U-Net, trained apart, and a logistic gate between their outputs, fitted on training files.

The gate is fitted (`fit_gate`) by the waveform error itself: in a block, the error of the mix
is |e - w d|^2 = |e|^2 - 2 w <e, d> + w^2 |d|^2 (e the spectral model's error, d the U-Net's
output minus the spectral model's), so minimising the sum of w^2 |d|^2 - 2 w <e, d> (each file's
terms over its energy, the per-file SNR's weighting) is minimising the error. The model then
routes each whole input by the mean of its blocks' weights (`GatedConfig.route_above`), at the
highest threshold that still sends the validation files the U-Net gains on to it, and at which
none it loses on goes there (`route_threshold`).
Measured in docs/AUDIO_MODEL.md (2026-12-04).

    python -m models.audio.gate --spectral models/pretrained/superres-x4-16k --unet RUN \
        --data-dir D --output DIR [--blend]   # fit on training files, choose the route on
                                              # validation files, score on both and on test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from datasets.audio.dataset import corpus_part
from datasets.audio.pairs import degrade
from datasets.audio.signals import sinc_upsample, spline_upsample
from datasets.io import write_json_atomic
from models.audio.calibrate import CALIBRATION_FILE
from models.audio.config import AudioUNetConfig, BWEConfig, GatedConfig
from models.audio.evaluate import read_hr, split_files
from models.audio.gated import Gate, GatedExtender, whole_blocks
from models.audio.infer import fit_length, load_model, superresolve_at_level, superresolve_gated
from models.audio.metrics import lsd, snr_db
from models.audio.train import TRAIN_JSON
from models.checkpoint import save_model

# Which files of each part fit and score the gate, and their first seconds (the measurement of
# docs/AUDIO_MODEL.md): every n-th file of the split by file id.
FIT_EVERY = {"bach": 4, "recordings-speech": 40, "recordings-music": 3}
SCORE_EVERY = {"bach": 4, "recordings-speech": 16, "recordings-music": 1}
SECONDS = 8.0
# The routing thresholds tried, lowest first; the gain that makes a validation file one the
# U-Net should get, and the SNR one sent to it may lose against the spectral model
# (`route_threshold`). A wrong route costs more than a missed one (real piano notes routed to
# the U-Net lost up to 8 dB; a render kept from it loses its 4 dB gain), hence the highest
# threshold that keeps the gains rather than the lowest that holds the losses.
ROUTE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
ROUTE_GAIN_DB = 1.0
ROUTE_TOLERANCE_DB = 0.1
# The gate's record beside the model: its fit, the route's choice and its scores.
GATE_FILE = "gate.json"


def block_terms(
    reference: np.ndarray, spectral: np.ndarray, unet: np.ndarray, block: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per whole block, <e, d> and |d|^2 over the file's mean block energy (module doc)."""
    error = whole_blocks(reference.astype(np.float64) - spectral, block)
    difference = whole_blocks(unet.astype(np.float64) - spectral, block)
    energy = np.mean(np.sum(whole_blocks(reference.astype(np.float64), block) ** 2, 1))
    energy = max(float(energy), 1e-12)
    return np.sum(error * difference, 1) / energy, np.sum(difference**2, 1) / energy


def fit_gate(
    features: np.ndarray, cross: np.ndarray, power: np.ndarray, steps: int = 2000, seed: int = 0
) -> Gate:
    """The gate minimising the summed sum of w^2 `power` - 2 w `cross` over the blocks
    (`block_terms`), by Adam on the standardised features."""
    torch.manual_seed(seed)
    mean, std = features.mean(0), features.std(0) + 1e-6
    z = torch.tensor((features - mean) / std, dtype=torch.float64)
    c, d = torch.tensor(cross), torch.tensor(power)
    weights = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([weights, bias], lr=0.05)
    for _ in range(steps):
        w = torch.sigmoid(z @ weights + bias)
        loss = torch.mean(w * w * d - 2 * w * c)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return Gate(
        tuple(mean.tolist()),
        tuple(std.tolist()),
        tuple(weights.detach().tolist()),
        float(bias.detach()),
    )


def assemble(spectral_dir: str | Path, unet_dir: str | Path) -> GatedExtender:
    """A gated model (gate shut) holding the spectral model in `spectral_dir` at its calibrated
    settings and the U-Net in `unet_dir`, on the CPU in eval mode."""
    spectral, unet = load_model(spectral_dir, "cpu"), load_model(unet_dir, "cpu")
    for directory, model, kind in (
        (spectral_dir, spectral, BWEConfig),
        (unet_dir, unet, AudioUNetConfig),
    ):
        if not isinstance(model.config, kind):
            raise ValueError(f"{directory}: not a {kind.__name__} model")
    model = GatedExtender(GatedConfig(spectral=spectral.config, unet=unet.config))
    model.spectral.load_state_dict(spectral.state_dict())
    model.unet.load_state_dict(unet.state_dict())
    return model.eval()


def _every(rows: list[dict], every: dict[str, int]) -> list[dict]:
    by_part: dict[str, list[dict]] = {}
    for row in rows:
        by_part.setdefault(corpus_part(row["path"]), []).append(row)
    return [row for part, group in by_part.items() for row in group[:: every.get(part, 1)]]


def _references(
    data_dir: str, rows: list[dict], ratio: int, seconds: float | None
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Per file: its part, the reference and its soxr input."""
    for row in rows:
        hr = read_hr(data_dir, row, seconds)
        yield corpus_part(row["path"]), hr, degrade(hr, ratio, "soxr")


def _both_outputs(
    model: GatedExtender, data_dir: str, rows: list[dict]
) -> Iterator[tuple[dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per file of `rows` at least a gate block long and not silent (their first `SECONDS`):
    the row, the reference, the spline input, and each network's output alone."""
    config = model.config
    references = _references(data_dir, rows, config.ratio, SECONDS)
    for row, (_, hr, lr) in zip(rows, references, strict=True):
        if len(hr) < config.block or not np.any(hr):
            continue
        x = spline_upsample(lr, config.ratio, len(hr))
        spectral = fit_length(superresolve_at_level(model.spectral, lr)[0], len(hr))
        unet = fit_length(superresolve_at_level(model.unet, lr)[0], len(hr))
        yield row, hr, x, spectral, unet


def fit_on_split(model: GatedExtender, data_dir: str, split: str = "train") -> Gate:
    """A gate for `model` fitted on every `FIT_EVERY`-th file of `split`, their first
    `SECONDS` (both networks run on the whole of each)."""
    features, cross, power = [], [], []
    rows = _every(split_files(data_dir, split), FIT_EVERY)
    for _, hr, x, spectral, unet in _both_outputs(model, data_dir, rows):
        features.append(model.block_features(x))
        c, d = block_terms(hr, spectral, unet, model.config.block)
        cross.append(c)
        power.append(d)
    return fit_gate(np.concatenate(features), np.concatenate(cross), np.concatenate(power))


def route_threshold(files: list[dict]) -> float:
    """The routing threshold for validation `files` (each with its mean gate weight and the
    U-Net's SNR minus the spectral model's): the highest of `ROUTE_THRESHOLDS` that still sends
    every file the U-Net gains `ROUTE_GAIN_DB` on to it, as far from the recordings as the
    gains allow; raised to the lowest above which no file loses more than
    `ROUTE_TOLERANCE_DB`. 1 (the U-Net never) when no file gains or none holds."""
    gains = [f["mean_weight"] for f in files if f["unet_minus_spectral_db"] >= ROUTE_GAIN_DB]
    if not gains:
        return 1.0
    kept = [above for above in ROUTE_THRESHOLDS if above < min(gains)]
    holds = [
        above
        for above in ROUTE_THRESHOLDS
        if above >= (kept[-1] if kept else 0.0)
        and all(
            f["unet_minus_spectral_db"] >= -ROUTE_TOLERANCE_DB
            for f in files
            if f["mean_weight"] > above
        )
    ]
    return holds[0] if holds else 1.0


def choose_route(model: GatedExtender, data_dir: str, split: str = "valid") -> dict:
    """The routing threshold (`GatedConfig.route_above`, `route_threshold`) from the files of
    `split` (every `SCORE_EVERY`-th, first `SECONDS`), with each file's mean gate weight and
    SNR difference."""
    rows = _every(split_files(data_dir, split), SCORE_EVERY)
    files = [
        {
            "path": row["path"],
            "mean_weight": round(float(np.mean(model.block_weights(x))), 4),
            "unet_minus_spectral_db": round(snr_db(hr, unet) - snr_db(hr, spectral), 3),
        }
        for row, hr, x, spectral, unet in _both_outputs(model, data_dir, rows)
    ]
    return {"threshold": route_threshold(files), "split": split, "files": files}


def score(model: GatedExtender, data_dir: str, split: str) -> dict[str, dict[str, float]]:
    """Per part of `split` (validation: every `SCORE_EVERY`-th file, first `SECONDS`; test:
    whole files): the SNR over the spline's and the LSD over the sinc's, of the spectral model
    alone and of the gated model, and the share of the output the gate opened (routed: the
    share of the files sent to the U-Net)."""
    config = model.config
    seconds = SECONDS if split != "test" else None
    rows = split_files(data_dir, split)
    if split != "test":
        rows = _every(rows, SCORE_EVERY)
    sums: dict[str, list[list[float]]] = {}
    for part, hr, lr in _references(data_dir, rows, config.ratio, seconds):
        spectral = fit_length(superresolve_at_level(model.spectral, lr)[0], len(hr))
        gated = fit_length(superresolve_gated(model, lr)[0], len(hr))
        x = spline_upsample(lr, config.ratio, len(hr))
        sums.setdefault(part, []).append(
            [
                snr_db(hr, x),
                lsd(hr, sinc_upsample(lr, config.ratio, len(hr))),
                snr_db(hr, spectral),
                lsd(hr, spectral),
                snr_db(hr, gated),
                lsd(hr, gated),
                float(np.mean(model.weights(x))),
            ]
        )
    table = {}
    for part, values in sums.items():
        m = np.mean(values, axis=0)
        table[part] = {
            "n_files": len(values),
            "spectral_snr_over_spline_db": round(m[2] - m[0], 3),
            "spectral_lsd_over_sinc": round(m[3] / m[1], 3),
            "gated_snr_over_spline_db": round(m[4] - m[0], 3),
            "gated_lsd_over_sinc": round(m[5] / m[1], 3),
            "mean_weight": round(m[6], 3),
        }
    return table


def write_gated_model(
    spectral_dir: str | Path,
    unet_dir: str | Path,
    data_dir: str,
    output: str | Path,
    blend: bool = False,
) -> tuple[GatedExtender, dict]:
    """Fit the gate on `data_dir`'s training files, choose its routing threshold on the
    validation files (`choose_route`; with `blend`, mix per block instead), and write the gated
    model to `output` (its config.json last, so a directory with one is whole), with the
    spectral model's train.json (the training filter the evaluation degrades with) and
    calibration.json where it has them, and the fit and the choice in gate.json. The U-Net's
    weights are stored in float16."""
    model = assemble(spectral_dir, unet_dir)
    gate = fit_on_split(model, data_dir)
    model.set_gate(gate)
    # The U-Net's weights as stored (float16) from here on, so the route is chosen, and the
    # model scored, with the weights the file holds.
    model.unet.half().float()
    route = None if blend else choose_route(model, data_dir)
    if route is not None:
        model.config = dataclasses.replace(model.config, route_above=route["threshold"])
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    record = {
        "spectral": Path(spectral_dir).name,
        "unet": Path(unet_dir).name,
        "fit": {"split": "train", "every": FIT_EVERY, "seconds": SECONDS},
        "gate": gate.__dict__,
        "route": route,
    }
    write_json_atomic(output / GATE_FILE, record)
    for name in (TRAIN_JSON, CALIBRATION_FILE):
        if (Path(spectral_dir) / name).is_file():
            shutil.copyfile(Path(spectral_dir) / name, output / name)
    # The U-Net's weights in float16: both networks then fit the 12 MB a shipped model may
    # take (the model returned already holds the same rounded weights).
    model.unet.half()
    save_model(output, model, model.config)
    model.unet.float()
    return model, record


def main(argv: list[str] | None = None) -> None:
    """Fit the gate between a spectral model and a U-Net on a data directory's training files,
    write the gated model to `--output`, and score it beside the spectral model alone on the
    validation and test files; prints JSON (and keeps it in the model's gate.json)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--spectral", required=True, help="the spectral model (a run or a card)")
    parser.add_argument("--unet", required=True, help="the U-Net run")
    parser.add_argument("--data-dir", required=True, help="holds audio/files.parquet")
    parser.add_argument("--output", required=True, help="the gated model's directory")
    parser.add_argument("--splits", nargs="*", default=["valid", "test"])
    parser.add_argument(
        "--blend", action="store_true", help="mix the outputs per block instead of routing"
    )
    args = parser.parse_args(argv)
    model, record = write_gated_model(
        args.spectral, args.unet, args.data_dir, args.output, args.blend
    )
    for split in args.splits:
        record[split] = score(model, args.data_dir, split)
    write_json_atomic(Path(args.output) / GATE_FILE, record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
