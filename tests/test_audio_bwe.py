"""The spectral bandwidth extender (`models.audio.bwe`): the identity untrained, learns the
high band of a tiny set, and loads by its config beside the U-Net."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from datasets.audio.signals import decimate, sinc_upsample, spline_upsample
from models.audio.bwe import BandwidthExtender
from models.audio.config import AudioTrainConfig, BWEConfig, preset
from models.audio.infer import load_model, superresolve
from models.audio.metrics import snr_db
from models.audio.train import train_audio_unet
from models.checkpoint import CONFIG_FILE, ModelDirectoryError

torch.set_num_threads(1)


@pytest.mark.parametrize("learned_skip", [False, True])
def test_an_untrained_extender_returns_its_input(learned_skip: bool):
    config = preset("bwe-tiny", patch=2048, learned_amplitude_skip=learned_skip)
    model = BandwidthExtender(config, torch.Generator().manual_seed(0))
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 1, 2048)).astype("float32"))
    y = model(x)
    assert y.shape == x.shape
    assert snr_db(x.numpy().ravel(), y.detach().numpy().ravel()) > 30


def test_the_kept_band_is_what_a_sinc_interpolation_gives():
    """Below `keep_below` the output is the spline input with the spline's droop undone: the
    band-limited interpolation's spectrum, not the spline's (which falls 11% short near the
    top of that band)."""
    config = preset("bwe-full", patch=8192)
    model = BandwidthExtender(config, torch.Generator().manual_seed(0))
    lr = np.random.default_rng(0).standard_normal(4 * 2048)
    n = 4 * len(lr)
    spline = torch.from_numpy(spline_upsample(lr, 4, n))
    sinc = torch.from_numpy(sinc_upsample(lr, 4, n).astype("float32"))
    with torch.no_grad():
        out = model(spline[None, None])[0, 0]

    def kept_band(x: torch.Tensor) -> torch.Tensor:
        window = torch.hann_window(config.win)
        spectrum = torch.stft(x, config.n_fft, config.hop, config.win, window, return_complex=True)
        return spectrum[: config.kept_bins, 8:-8]  # away from the ends

    def error(x: torch.Tensor) -> float:
        return float(
            (kept_band(x) - kept_band(sinc)).abs().pow(2).sum() / kept_band(sinc).abs().pow(2).sum()
        )

    assert error(out) < 1e-3
    assert error(spline) > 5 * error(out)


def test_a_learned_amplitude_skip_can_let_go_of_the_inputs_high_band():
    """With the skip weights at 0 the high band's amplitude is the network's alone: a 6 kHz
    tone 100x louder in the input (same phase) leaves the output's high band as it was; with
    the fixed skip it comes out 100x louder, as it went in."""
    config = preset("bwe-tiny", patch=2048, learned_amplitude_skip=True)
    model = BandwidthExtender(config, torch.Generator().manual_seed(0))
    t = np.arange(2048) / config.hr_rate
    low, high = np.sin(2 * np.pi * 500 * t), 1e-3 * np.sin(2 * np.pi * 6000 * t)
    band = slice(int(5000 / 8000 * 1024), int(7000 / 8000 * 1024))

    def high_band_energy(x: np.ndarray) -> float:
        with torch.no_grad():
            y = model(torch.from_numpy(x.astype("float32"))[None, None])[0, 0].numpy()
        return float(np.sum(np.abs(np.fft.rfft(y))[band] ** 2))

    fixed = high_band_energy(low + 100 * high) / high_band_energy(low + high)
    with torch.no_grad():
        model.amp_skip.zero_()
    let_go = high_band_energy(low + 100 * high) / high_band_energy(low + high)
    assert fixed == pytest.approx(1e4, rel=0.1)
    assert 0.5 < let_go < 2  # the network's own change still sees its input


def test_a_config_refuses_a_window_longer_than_the_fft():
    with pytest.raises(ValueError, match="hop <= win <= n_fft"):
        BWEConfig(n_fft=256, win=512)


def test_it_learns_a_tiny_set_above_the_spline_and_loads_as_itself(tiny_set, tmp_path):
    config = AudioTrainConfig(
        preset="bwe-tiny", steps=200, batch_size=8, lr=3e-3, log_every=50, eval_split="train"
    )
    run = tmp_path / "run"
    summary = train_audio_unet(tiny_set, run, config)
    assert summary["eval_snr_db"] > summary["eval_spline_snr_db"] + 2.0
    model = load_model(run, "cpu")
    assert isinstance(model, BandwidthExtender)
    lr = np.random.default_rng(1).standard_normal(1000).astype("float32") * 0.1
    assert superresolve(model, lr).shape == (4000,)
    # The other architecture's config over these weights: refused, naming the file.
    (run / CONFIG_FILE).write_text(json.dumps({"widths": [8, 16], "kernels": [9, 9]}))
    with pytest.raises(ModelDirectoryError, match=r"model\.safetensors"):
        load_model(run, "cpu")


def test_the_band_every_filter_passes_is_the_inputs_own():
    """Below `keep_below` of the input's band the output is the input whatever the network's
    weights: training can only change the band above it (and the kept bins' gains)."""
    config = preset("bwe-tiny", patch=2048)
    model = BandwidthExtender(config, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for layer in (model.amp_out, model.real_out, model.imag_out):
            layer.weight.normal_(0, 0.2)
    rng = np.random.default_rng(0)
    t = np.arange(2048) / config.hr_rate
    low_tone = np.sin(2 * np.pi * 500 * t)  # well inside 0.75 x 2 kHz
    x = torch.from_numpy((low_tone + 0.1 * rng.standard_normal(2048)).astype("float32"))[None, None]
    y = model(x).detach().numpy().ravel()
    spectrum_in = np.abs(np.fft.rfft(x.numpy().ravel()))
    spectrum_out = np.abs(np.fft.rfft(y))
    low = slice(20, int(0.6 * 1024 / 4))
    high = slice(int(1.2 * 1024 / 4), 1024)
    np.testing.assert_allclose(spectrum_out[low], spectrum_in[low], rtol=0.05, atol=0.5)
    assert np.abs(spectrum_out[high] - spectrum_in[high]).mean() > 1.0  # the rest is changed
    with pytest.raises(ValueError, match="keep_below"):
        BWEConfig(keep_below=1.5)


def test_the_high_band_gain_scales_only_the_band_above_the_inputs_nyquist():
    config = BWEConfig(n_fft=256, hop=32, win=128, patch=2048)
    model = BandwidthExtender(config, torch.Generator().manual_seed(0)).eval()
    x = torch.randn(1, 1, 2048, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(x)
        model.config = dataclasses.replace(config, high_band_gain=0.0)
        silenced = model(x)
    spectra = [torch.fft.rfft(y[0, 0, 256:-256]).abs() ** 2 for y in (full, silenced)]
    nyquist = spectra[0].numel() // config.ratio
    # Below the input's Nyquist frequency the output is as before; above it, gone (but for
    # the leak of the cut through the overlap-added frames' window, within 250 Hz of it).
    below = [s[: nyquist - 24].sum().item() for s in spectra]
    above = [s[nyquist + 24 :].sum().item() for s in spectra]
    assert below[1] == pytest.approx(below[0], rel=1e-2)
    assert above[1] < 1e-2 * above[0]
    with pytest.raises(ValueError, match="high_band_gain"):
        BWEConfig(high_band_gain=1.5)


def test_the_two_bands_sum_to_the_output_at_any_level():
    config = preset("bwe-tiny", patch=2048, hr_rate=16000, high_band_gain=0.4)
    model = BandwidthExtender(config, torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        model.amp_out.bias.fill_(1.0)  # a band loud enough to tell the levels apart
        x = torch.randn(3, 1, 4096, generator=torch.Generator().manual_seed(1))
        bands = model.bands(x)
        assert bands.shape == (3, 2, 4096)
        torch.testing.assert_close(model(x)[:, 0], bands[:, 0] + 0.4 * bands[:, 1])
        # The second band is all above the input's Nyquist frequency (2 kHz of 8).
        spectrum = torch.fft.rfft(bands[:, 1, 512:-512]).abs() ** 2
        assert spectrum[:, : spectrum.shape[1] // 4 - 24].sum() < 1e-3 * spectrum.sum()
    with pytest.raises(ValueError, match="high_band_budget"):
        BWEConfig(high_band_budget=-0.5)


def test_pass_below_takes_the_inputs_band_up_to_its_share_in_place_of_the_prediction():
    """At inference the band between keep_below and pass_below is the input's, with the
    spline's droop undone: the same output as a network built to keep that band itself."""
    config = BWEConfig(n_fft=256, hop=32, win=128, patch=2048, keep_below=0.75)
    passing = BandwidthExtender(config, torch.Generator().manual_seed(0)).eval()
    keeping = BandwidthExtender(
        dataclasses.replace(config, keep_below=1.0), torch.Generator().manual_seed(0)
    ).eval()
    with torch.no_grad():
        for module in (passing, keeping):
            module.amp_out.bias.fill_(1.0)  # a prediction far from the input, so it shows
    x = torch.randn(1, 1, 2048, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = passing(x)
        passing.config = dataclasses.replace(config, pass_below=1.0)
        passed = passing(x)
        kept = keeping(x)
    assert torch.allclose(passed, kept, atol=1e-5)
    assert not torch.allclose(predicted, kept, atol=1e-3)
    assert config.pass_bins == config.kept_bins == 24
    assert passing.config.pass_bins == passing.config.nyquist_bin == 32
    with pytest.raises(ValueError, match="pass_below"):
        BWEConfig(keep_below=0.75, pass_below=0.7)


def test_an_input_with_a_sharp_band_edge_is_passed_up_to_its_own_share():
    """`pass_below_sharp_edge` replaces `pass_below` for inputs a high-quality resampler made,
    judged once on the whole input by `superresolve`; other inputs keep `pass_below`."""
    config = BWEConfig(
        n_fft=256, hop=32, win=128, patch=2048, pass_below=0.8, pass_below_sharp_edge=1.0
    )
    noise = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    sharp, gradual = decimate(noise, 4, "soxr"), decimate(noise, 4, "cheby")
    assert config.for_input(sharp).pass_below == 1.0
    assert config.for_input(gradual) == config
    assert (
        dataclasses.replace(config, pass_below_sharp_edge=None).for_input(sharp).pass_below == 0.8
    )

    model = BandwidthExtender(config, torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        model.amp_out.bias.fill_(1.0)  # a prediction far from the input, so the choice shows
    fixed = BandwidthExtender(
        dataclasses.replace(config, pass_below=1.0, pass_below_sharp_edge=None)
    ).eval()
    fixed.load_state_dict(model.state_dict())
    np.testing.assert_allclose(superresolve(model, sharp), superresolve(fixed, sharp), atol=1e-6)
    assert model.config == config  # the file's settings do not outlive the call
    fixed.config = dataclasses.replace(config, pass_below_sharp_edge=None)
    np.testing.assert_allclose(
        superresolve(model, gradual), superresolve(fixed, gradual), atol=1e-6
    )
    assert not np.allclose(superresolve(model, sharp), superresolve(fixed, sharp), atol=1e-3)
    with pytest.raises(ValueError, match="pass_below_sharp_edge"):
        BWEConfig(keep_below=0.75, pass_below_sharp_edge=0.7)
