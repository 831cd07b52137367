"""The gate between the spectral card's high band and a U-Net's (`models.audio.gate`): the mix
it makes, features that ignore the level, a fit that opens where the U-Net is right and closes
where it is not, and the fit and the score on a data directory."""

from __future__ import annotations

import numpy as np
import torch

from models.audio.bwe import BandwidthExtender
from models.audio.config import preset
from models.audio.gate import (
    BANDS,
    BLOCK,
    Gate,
    block_features,
    block_terms,
    fit_gate,
    fit_on_split,
    gated,
    high_band,
    score,
)
from models.audio.unet import AudioUNet

torch.set_num_threads(1)
RATE, NYQUIST = 16000, 2000.0


def tone(hz: float, n: int = 4 * BLOCK) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(n) / RATE)


def test_the_mix_takes_the_unets_band_above_the_cutoff_by_its_weight():
    card, unet = tone(500) + tone(3000), 2 * tone(500) + tone(5000)
    for w, expected in [(0.0, card), (1.0, tone(500) + tone(5000))]:
        mixed = gated(card, unet, np.full(len(card), w), RATE, NYQUIST)
        np.testing.assert_allclose(mixed, expected, atol=1e-4)
    half = gated(card, unet, np.full(len(card), 0.5), RATE, NYQUIST)
    np.testing.assert_allclose(half, tone(500) + 0.5 * tone(3000) + 0.5 * tone(5000), atol=1e-4)


def test_block_features_describe_the_shape_not_the_level():
    rng = np.random.default_rng(0)
    x = np.convolve(rng.standard_normal(5 * BLOCK), np.ones(4) / 4, "same")
    x[: 2 * BLOCK] *= 0.1  # two quiet blocks, then three loud ones
    features = block_features(x, RATE, NYQUIST)
    assert features.shape == (5, BANDS + 2)
    np.testing.assert_allclose(block_features(30 * x, RATE, NYQUIST), features, atol=1e-6)
    assert features[:, -1].max() == 0.0
    assert np.all(features[:2, -1] < -1.5)  # 20 dB under the loudest block


def test_the_fit_opens_where_the_unet_is_right_and_closes_where_it_is_not():
    """Blocks of two kinds, told apart by their first feature: where the U-Net's band is the
    truth (<e, d> = |d|^2: the best weight 1) and where it points away from it (the best 0)."""
    rng = np.random.default_rng(0)
    kind = rng.integers(0, 2, 400)
    features = np.column_stack([2.0 * kind - 1, rng.standard_normal((400, 3))])
    features[:, 0] += 0.1 * rng.standard_normal(400)
    power = rng.uniform(0.5, 2.0, 400)
    cross = np.where(kind == 1, power, -0.5 * power)
    gate = fit_gate(features, cross, power, steps=500)
    weights = gate.block_weights(features)
    assert weights[kind == 1].min() > 0.8
    assert weights[kind == 0].max() < 0.2
    # Per sample: the blocks' weights between their centres; nothing under a block's length.
    x = np.random.default_rng(1).standard_normal(3 * BLOCK)
    assert gate.sample_weights(x[: BLOCK - 1], RATE, NYQUIST).tolist() == [0.0] * (BLOCK - 1)


def test_block_terms_are_the_error_of_the_mix_as_a_function_of_the_weight():
    """|e - w d|^2 over the file's energy = |e|^2 / E - 2 w <e, d> / E + w^2 |d|^2 / E."""
    rng = np.random.default_rng(2)
    reference, card, unet = (rng.standard_normal(2 * BLOCK) for _ in range(3))
    cross, power = block_terms(reference, card, unet, RATE, NYQUIST)
    w = 0.3
    mixed = gated(card, unet, np.full(len(card), w), RATE, NYQUIST).astype(np.float64)
    error = (high_band(reference, RATE, NYQUIST) - high_band(mixed, RATE, NYQUIST)).reshape(2, -1)
    base = (high_band(reference, RATE, NYQUIST) - high_band(card, RATE, NYQUIST)).reshape(2, -1)
    energy = np.mean(np.sum(reference.reshape(2, -1) ** 2, 1))
    expected = (np.sum(error**2, 1) - np.sum(base**2, 1)) / energy
    np.testing.assert_allclose(w * w * power - 2 * w * cross, expected, rtol=1e-6, atol=1e-9)


def test_fitted_and_scored_on_a_data_directory(audio_data_dir):
    """Two untrained models (the U-Net returns its spline input): a gate fitted on the training
    files and a table per part of the validation files, the card's and the mix's."""
    config = {"patch": 2048, "hr_rate": RATE, "ratio": 4}
    card = BandwidthExtender(preset("bwe-tiny", **config), torch.Generator().manual_seed(0))
    unet = AudioUNet(preset("tiny", **config), torch.Generator().manual_seed(0))
    gate = fit_on_split(card.eval(), unet.eval(), str(audio_data_dir))
    assert isinstance(gate, Gate)
    assert len(gate.weights) == BANDS + 2
    table = score(card, unet, gate, str(audio_data_dir), "valid")
    assert table
    for row in table.values():
        assert row["n_files"] >= 1
        assert 0.0 <= row["mean_weight"] <= 1.0
        assert np.isfinite([row[k] for k in row if k != "n_files"]).all()
