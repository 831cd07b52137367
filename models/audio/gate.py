"""A learned gate between two super-resolution models' bands above the input's Nyquist frequency.

The shipped spectral card holds the recordings' SNR but gains only +0.75 dB on the chorale
renders; a U-Net gains +5 dB there and loses 1.5-2.5 dB on the recordings. Their mix

    card + w (unet_high - card_high)        (`gated`; *_high: the band above the input's Nyquist)

with a weight w per block of `BLOCK` samples, chosen from the input alone, keeps the best of
both where w follows what the input is. `block_features` describes each block of the spline
input by its spectrum's shape below the input's Nyquist frequency (the log shares of 16
log-spaced bands, the spectral flatness) and its energy against the file's loudest block; a
logistic regression maps them to w. It is fitted (`fit_gate`) by the waveform error itself: in
a block, the error of the mix is |e - w d|^2 = |e|^2 - 2 w <e, d> + w^2 |d|^2 (e the card's
error in the band, d the difference of the two bands), so minimising the sum of
w^2 |d|^2 - 2 w <e, d> (each file's terms over its energy, the per-file SNR's weighting) is
minimising the error. Measured in docs/AUDIO_MODEL.md (2026-12-04): +4.53 dB over the spline on
the held-out renders, speech and music at the spline's SNR (+0.09, -0.00 dB); not yet a
shipped model (both networks: 15 MB, about 23x real time on one core).

    python -m models.audio.gate --card models/pretrained/superres-x4-16k --unet RUN \
        --data-dir D      # fit on training files, score on validation and test files
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datasets.audio.dataset import corpus_part
from datasets.audio.pairs import degrade
from datasets.audio.signals import sinc_upsample, spline_upsample
from models.audio.evaluate import read_hr, split_files
from models.audio.infer import AudioModel, fit_length, load_model, superresolve_at_level
from models.audio.metrics import lsd, snr_db

BLOCK = 4096  # samples at the output rate: 256 ms at 16 kHz
BANDS = 16
LOWEST_HZ = 60.0
# Which files of each part fit and score the gate, and their first seconds (the measurement of
# docs/AUDIO_MODEL.md): every n-th file of the split by file id.
FIT_EVERY = {"bach": 4, "recordings-speech": 40, "recordings-music": 3}
SCORE_EVERY = {"bach": 4, "recordings-speech": 16, "recordings-music": 1}
SECONDS = 8.0


def high_band(y: np.ndarray, rate: int, cutoff_hz: float) -> np.ndarray:
    """The part of `y` at or above `cutoff_hz` (a brick-wall split of the whole signal)."""
    spectrum = np.fft.rfft(y.astype(np.float64))
    spectrum[np.fft.rfftfreq(len(y), 1 / rate) < cutoff_hz] = 0
    return np.fft.irfft(spectrum, len(y))


def gated(
    card: np.ndarray, unet: np.ndarray, w: np.ndarray, rate: int, cutoff_hz: float
) -> np.ndarray:
    """The card's output with its band above `cutoff_hz` moved toward the U-Net's by `w` (per
    sample, in [0, 1])."""
    return (card + w * high_band(unet - card, rate, cutoff_hz)).astype(np.float32)


def _blocks(y: np.ndarray) -> np.ndarray:
    count = len(y) // BLOCK
    return y[: count * BLOCK].reshape(count, BLOCK)


def block_features(x: np.ndarray, rate: int, nyquist_hz: float) -> np.ndarray:
    """(blocks, BANDS + 2) features of each whole block of the spline input `x`: the log10
    shares of `BANDS` log-spaced bands from `LOWEST_HZ` to the input's Nyquist frequency, the
    spectral flatness (log geometric over arithmetic mean of the power there), the block's
    log10 energy against the file's loudest block. None depends on the file's level."""
    power = np.abs(np.fft.rfft(_blocks(x.astype(np.float64)) * np.hanning(BLOCK), axis=1)) ** 2
    hz = np.fft.rfftfreq(BLOCK, 1 / rate)
    edges = np.geomspace(LOWEST_HZ, nyquist_hz, BANDS + 1)
    bands = np.stack(
        [power[:, (hz >= lo) & (hz < hi)].sum(1) for lo, hi in itertools.pairwise(edges)], 1
    )
    bands += 1e-12 * bands.sum(1, keepdims=True).max(initial=1e-12)
    total = bands.sum(1, keepdims=True)
    inside = power[:, (hz >= LOWEST_HZ) & (hz < nyquist_hz)] + 1e-30
    flatness = np.log(inside).mean(1) - np.log(inside.mean(1))
    energy = np.log10(total[:, 0])
    return np.column_stack([np.log10(bands / total), flatness, energy - energy.max()])


def block_terms(
    reference: np.ndarray, card: np.ndarray, unet: np.ndarray, rate: int, cutoff_hz: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per whole block, <e, d> and |d|^2 over the file's mean block energy (module doc)."""
    # The split is linear: the band of a difference is the difference of the bands.
    error = _blocks(high_band(reference - card, rate, cutoff_hz))
    difference = _blocks(high_band(unet - card, rate, cutoff_hz))
    energy = max(float(np.mean(np.sum(_blocks(reference.astype(np.float64)) ** 2, 1))), 1e-12)
    return np.sum(error * difference, 1) / energy, np.sum(difference**2, 1) / energy


@dataclass(frozen=True)
class Gate:
    """The logistic regression: w = sigmoid(((features - mean) / std) . weights + bias)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def block_weights(self, features: np.ndarray) -> np.ndarray:
        z = (features - np.array(self.mean)) / np.array(self.std)
        return 1.0 / (1.0 + np.exp(-(z @ np.array(self.weights) + self.bias)))

    def sample_weights(self, x: np.ndarray, rate: int, nyquist_hz: float) -> np.ndarray:
        """w per sample of `x`: the blocks' weights, linear between block centres (and the
        nearest block's beyond them; 0 for an input shorter than a block)."""
        if len(x) < BLOCK:
            return np.zeros(len(x))
        w = self.block_weights(block_features(x, rate, nyquist_hz))
        centres = (np.arange(len(w)) + 0.5) * BLOCK
        return np.interp(np.arange(len(x)), centres, w)


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


def _every(rows: list[dict], every: dict[str, int]) -> list[dict]:
    by_part: dict[str, list[dict]] = {}
    for row in rows:
        by_part.setdefault(corpus_part(row["path"]), []).append(row)
    return [row for part, group in by_part.items() for row in group[:: every.get(part, 1)]]


def _outputs(
    card: AudioModel, unet: AudioModel, data_dir: str, rows: list[dict], seconds: float | None
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per file: part, reference, soxr input, spline input, the card's and the U-Net's output."""
    ratio = card.config.ratio
    for row in rows:
        hr = read_hr(data_dir, row, seconds)
        lr = degrade(hr, ratio, "soxr")
        card_out = fit_length(superresolve_at_level(card, lr)[0], len(hr))
        unet_out = fit_length(superresolve_at_level(unet, lr)[0], len(hr))
        yield (
            corpus_part(row["path"]),
            hr,
            lr,
            spline_upsample(lr, ratio, len(hr)),
            card_out,
            unet_out,
        )


def fit_on_split(card: AudioModel, unet: AudioModel, data_dir: str, split: str = "train") -> Gate:
    """A gate fitted on every `FIT_EVERY`-th file of `split`, their first `SECONDS`."""
    rate, ratio = card.config.hr_rate, card.config.ratio
    nyquist = rate / ratio / 2
    features, cross, power = [], [], []
    rows = _every(split_files(data_dir, split), FIT_EVERY)
    for _, hr, _, x, card_out, unet_out in _outputs(card, unet, data_dir, rows, SECONDS):
        if len(hr) < BLOCK or not np.any(hr):
            continue
        features.append(block_features(x, rate, nyquist))
        c, d = block_terms(hr, card_out, unet_out, rate, nyquist)
        cross.append(c)
        power.append(d)
    return fit_gate(np.concatenate(features), np.concatenate(cross), np.concatenate(power))


def score(
    card: AudioModel, unet: AudioModel, gate: Gate, data_dir: str, split: str
) -> dict[str, dict[str, float]]:
    """Per part of `split` (validation: every `SCORE_EVERY`-th file, first `SECONDS`; test:
    whole files): the SNR over the spline's and the LSD over the sinc's, of the card alone and
    of the gated mix, and the mean weight."""
    rate, ratio = card.config.hr_rate, card.config.ratio
    nyquist = rate / ratio / 2
    rows = split_files(data_dir, split)
    seconds = SECONDS if split != "test" else None
    if split != "test":
        rows = _every(rows, SCORE_EVERY)
    sums: dict[str, list[list[float]]] = {}
    for part, hr, lr, x, card_out, unet_out in _outputs(card, unet, data_dir, rows, seconds):
        w = gate.sample_weights(x, rate, nyquist)
        mixed = gated(card_out, unet_out, w, rate, nyquist)
        sums.setdefault(part, []).append(
            [
                snr_db(hr, x),
                lsd(hr, sinc_upsample(lr, ratio, len(hr))),
                snr_db(hr, card_out),
                lsd(hr, card_out),
                snr_db(hr, mixed),
                lsd(hr, mixed),
                float(np.mean(w)),
            ]
        )
    table = {}
    for part, values in sums.items():
        m = np.mean(values, axis=0)
        table[part] = {
            "n_files": len(values),
            "card_snr_over_spline_db": round(m[2] - m[0], 3),
            "card_lsd_over_sinc": round(m[3] / m[1], 3),
            "gated_snr_over_spline_db": round(m[4] - m[0], 3),
            "gated_lsd_over_sinc": round(m[5] / m[1], 3),
            "mean_weight": round(m[6], 3),
        }
    return table


def main(argv: list[str] | None = None) -> None:
    """Fit the gate between a spectral card and a U-Net on a data directory's training files
    and score it beside the card on its validation and test files; prints JSON."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--card", required=True, help="the spectral model (a run or a card)")
    parser.add_argument("--unet", required=True, help="the U-Net run")
    parser.add_argument("--data-dir", required=True, help="holds audio/files.parquet")
    parser.add_argument("--splits", nargs="*", default=["valid", "test"])
    args = parser.parse_args(argv)
    card, unet = load_model(args.card, "cpu"), load_model(args.unet, "cpu")
    gate = fit_on_split(card, unet, args.data_dir)
    result = {"gate": gate.__dict__, "card": str(Path(args.card)), "unet": str(Path(args.unet))}
    for split in args.splits:
        result[split] = score(card, unet, gate, args.data_dir, split)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
