"""The gated super-resolution model: two networks and a gate that picks between them per block.

The spectral model (`models.audio.bwe`) holds recordings at the spline's SNR but gains little
on the chorale renders, whose high band follows from the low band in phase; a U-Net gains
several dB there and loses on recordings. The gated model's output is

    (1 - w) spectral + w unet                  (`mix`)

with a weight w per block of `GatedConfig.block` samples, chosen from the input alone.
`block_features` describes each block of the spline input by its spectrum's shape below the
input's Nyquist frequency (the log shares of log-spaced bands, the spectral flatness) and its
energy against the file's loudest block; a logistic regression (`Gate`) maps them to w. A
network runs only on the stretches where its output has a share (`spans`), so a recording
the gate shuts costs what the spectral model alone does, and a render it opens what the U-Net
alone does. With `GatedConfig.route_above` the gate routes instead: the whole input goes to
one network, by the mean of its blocks' weights (`route`); that is how the model is built, since
per block the gate opened on stretches of real piano notes that the U-Net got wrong.
`models.audio.gate` fits the gate, chooses the routing threshold and writes the model directory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.audio.bwe import BandwidthExtender
from models.audio.config import GatedConfig
from models.audio.unet import AudioUNet

LOWEST_HZ = 60.0  # the lowest band's lower edge


def mix(spectral: np.ndarray, unet: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(1 - w) spectral + w unet, per sample; where w is 0 or 1 the other output is not read
    (it may be anything: that network did not run there)."""
    out = np.where(w >= 1.0, unet, spectral).astype(np.float64)
    between = (w > 0.0) & (w < 1.0)
    out[between] += w[between] * (unet[between] - spectral[between])
    return out.astype(np.float32)


def whole_blocks(y: np.ndarray, block: int) -> np.ndarray:
    """(blocks, block): the whole blocks of `y` (a shorter tail is left out)."""
    count = len(y) // block
    return y[: count * block].reshape(count, block)


def block_features(
    x: np.ndarray, rate: int, nyquist_hz: float, block: int, bands: int
) -> np.ndarray:
    """(blocks, bands + 2) features of each whole block of the spline input `x`: the log10
    shares of `bands` log-spaced bands from `LOWEST_HZ` to the input's Nyquist frequency, the
    spectral flatness (log geometric over arithmetic mean of the power there), the block's
    log10 energy against the file's loudest block. None depends on the file's level."""
    power = np.abs(np.fft.rfft(whole_blocks(x.astype(np.float64), block) * np.hanning(block))) ** 2
    hz = np.fft.rfftfreq(block, 1 / rate)
    edges = np.geomspace(LOWEST_HZ, nyquist_hz, bands + 1)
    shares = np.stack(
        [power[:, (hz >= lo) & (hz < hi)].sum(1) for lo, hi in itertools.pairwise(edges)], 1
    )
    shares += 1e-12 * shares.sum(1, keepdims=True).max(initial=1e-12)
    total = shares.sum(1, keepdims=True)
    inside = power[:, (hz >= LOWEST_HZ) & (hz < nyquist_hz)] + 1e-30
    flatness = np.log(inside).mean(1) - np.log(inside.mean(1))
    energy = np.log10(total[:, 0])
    return np.column_stack([np.log10(shares / total), flatness, energy - energy.max()])


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


def sample_weights(block_weights: np.ndarray, n: int, block: int) -> np.ndarray:
    """w per sample of an n-sample signal: the blocks' weights, linear between block centres
    (and the nearest block's beyond them; 0 without a whole block)."""
    if len(block_weights) == 0:
        return np.zeros(n)
    centres = (np.arange(len(block_weights)) + 0.5) * block
    return np.interp(np.arange(n), centres, block_weights)


def route(block_weights: np.ndarray, above: float) -> bool:
    """Whether a whole input goes to the U-Net: the mean of its blocks' weights is above
    `above` (`GatedConfig.route_above`)."""
    return bool(len(block_weights)) and float(np.mean(block_weights)) > above


def spans(needed: np.ndarray, margin: int, multiple: int = 1) -> list[tuple[int, int]]:
    """The stretches (start, stop) of the samples where `needed`, each widened by `margin`
    samples on both sides and out to multiples of `multiple` (within the signal), overlapping
    ones merged."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], needed.astype(np.int8), [0]])))
    found: list[tuple[int, int]] = []
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        start = max(0, (int(start) - margin) // multiple * multiple)
        stop = min(len(needed), -(-(int(stop) + margin) // multiple) * multiple)
        if found and start <= found[-1][1]:
            found[-1] = (found[-1][0], stop)
        else:
            found.append((start, stop))
    return found


class GatedExtender(nn.Module):
    """The two networks and the gate's coefficients (buffers, so they travel in the weights
    file). It has no forward pass of its own: `models.audio.infer.superresolve_gated` runs it."""

    def __init__(self, config: GatedConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        self.spectral = BandwidthExtender(config.spectral, generator)
        self.unet = AudioUNet(config.unet, generator)
        for name in ("gate_mean", "gate_std", "gate_weights"):
            self.register_buffer(name, torch.zeros(config.features, dtype=torch.float64))
        self.gate_std.fill_(1.0)
        # A shut gate until one is fitted: the spectral model alone.
        self.register_buffer("gate_bias", torch.tensor(-30.0, dtype=torch.float64))

    @property
    def gate(self) -> Gate:
        return Gate(
            tuple(self.gate_mean.tolist()),
            tuple(self.gate_std.tolist()),
            tuple(self.gate_weights.tolist()),
            float(self.gate_bias),
        )

    def set_gate(self, gate: Gate) -> None:
        for name, values in (
            ("gate_mean", gate.mean),
            ("gate_std", gate.std),
            ("gate_weights", gate.weights),
        ):
            getattr(self, name).copy_(torch.tensor(values, dtype=torch.float64))
        self.gate_bias.fill_(gate.bias)

    def block_features(self, x: np.ndarray) -> np.ndarray:
        """`block_features` of the spline input `x` at this model's rates and sizes."""
        config = self.config
        nyquist = config.hr_rate / config.ratio / 2
        return block_features(x, config.hr_rate, nyquist, config.block, config.bands)

    def block_weights(self, x: np.ndarray) -> np.ndarray:
        """The gate's weight per whole block of the spline input `x` (before any closing)."""
        return self.gate.block_weights(self.block_features(x))

    def weights(self, x: np.ndarray) -> np.ndarray:
        """w per sample of the spline input `x`: 0 in blocks under `closed_below`, 1 in blocks
        above 1 - `closed_below`; with `route_above`, 1 everywhere or 0 everywhere (`route`);
        0 for an input shorter than a block."""
        config = self.config
        if len(x) < config.block:  # no whole block to judge: the spectral model alone
            return np.zeros(len(x))
        w = self.block_weights(x)
        if config.route_above is not None:
            return np.full(len(x), float(route(w, config.route_above)))
        w[w < config.closed_below] = 0.0
        w[w > 1.0 - config.closed_below] = 1.0
        return sample_weights(w, len(x), config.block)
