"""The AudioUNet: shapes, the paper's layer facts, the residual, seeding."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.audio.config import PRESETS, AudioUNetConfig, preset
from models.audio.unet import AudioUNet, seeded_dropout, subpixel_1d

torch.set_num_threads(1)


def test_subpixel_interleaves_channel_groups_into_time() -> None:
    # Channel group j of the input becomes every r-th sample starting at offset j.
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 6, 4)
    y = subpixel_1d(x, 2)
    assert y.shape == (1, 3, 8)
    for channel in range(3):
        assert torch.equal(y[0, channel, 0::2], x[0, channel])
        assert torch.equal(y[0, channel, 1::2], x[0, 3 + channel])


@pytest.mark.parametrize("name", ["tiny", "quick", "full"])
@pytest.mark.parametrize("length", [1, 3])
def test_output_has_the_input_shape(name: str, length: int) -> None:
    config = preset(name)
    model = AudioUNet(config, torch.Generator().manual_seed(0)).eval()
    x = torch.randn(2, 1, length * config.multiple)
    assert model(x).shape == x.shape


def test_lengths_off_the_multiple_are_refused() -> None:
    config = preset("tiny")
    model = AudioUNet(config)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        model(torch.zeros(1, 1, 100))


def test_untrained_model_is_nearly_the_identity() -> None:
    # The last layer starts near zero, so the additive residual passes the input through.
    config = preset("quick")
    model = AudioUNet(config, torch.Generator().manual_seed(0)).eval()
    x = torch.randn(1, 1, 4 * config.multiple)
    y = model(x)
    assert torch.mean((y - x) ** 2) < 1e-3 * torch.mean(x**2)
    assert not torch.equal(x, y)


def test_paper_layer_widths_and_kernels() -> None:
    model = AudioUNet(preset("paper"))
    down = [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in model.down]
    assert down == [(1, 128, 65, 2), (128, 384, 33, 2), (384, 512, 17, 2), (512, 512, 9, 2)]
    b = model.bottleneck
    assert (b.out_channels, b.kernel_size[0], b.stride[0]) == (512, 9, 2)
    # Up blocks: 2x the width before the shuffle; their input is the shuffled half + the skip.
    up = [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in model.up]
    assert up == [(512, 1024, 9), (1024, 1024, 17), (1024, 768, 33), (768, 256, 65)]
    assert (model.last.in_channels, model.last.out_channels, model.last.kernel_size[0]) == (
        256,
        2,
        9,
    )
    assert model.config.dropout == 0.5


def test_same_generator_seed_same_weights() -> None:
    config = preset("tiny")
    a = AudioUNet(config, torch.Generator().manual_seed(3)).state_dict()
    b = AudioUNet(config, torch.Generator().manual_seed(3)).state_dict()
    c = AudioUNet(config, torch.Generator().manual_seed(4)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_seeded_dropout_is_reproducible_and_keeps_the_mean() -> None:
    x = torch.ones(10_000)
    a = seeded_dropout(x, 0.5, True, torch.Generator().manual_seed(1))
    b = seeded_dropout(x, 0.5, True, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) == {0.0, 2.0}
    assert abs(a.mean().item() - 1.0) < 0.05
    assert torch.equal(seeded_dropout(x, 0.5, False, None), x)


def test_presets_are_frozen_and_validated() -> None:
    config = preset("tiny", ratio=6, hr_rate=48000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ratio = 2  # type: ignore[misc]
    assert PRESETS["tiny"].widths == (8, 16)
    assert (config.ratio, config.hr_rate) == (6, 48000)
    # config.json holds lists: a config loaded from one equals its preset.
    assert AudioUNetConfig(widths=[8, 16], kernels=[9, 9], dropout=0.0) == PRESETS["tiny"]
    with pytest.raises(ValueError, match="unknown audio model preset"):
        preset("huge")
    with pytest.raises(ValueError, match="odd"):
        AudioUNetConfig(widths=[4], kernels=[8])
    with pytest.raises(ValueError, match="equal length"):
        AudioUNetConfig(widths=[4, 8], kernels=[9])
    with pytest.raises(ValueError, match="patch 102 is not a multiple of 4"):
        AudioUNetConfig(widths=[4], kernels=[9], patch=102)


def test_keep_below_makes_the_inputs_band_the_output_whatever_the_weights() -> None:
    """With `keep_below` the residual is high-passed: below that share of the input's Nyquist
    frequency (0.75 x 2 kHz at 16 kHz, x4) the output is the input; above it the network's."""
    config = preset("tiny", hr_rate=16000, ratio=4)
    kept = dataclasses.replace(config, keep_below=0.75)
    spectra = []
    for model_config in (config, kept):
        model = AudioUNet(model_config, torch.Generator().manual_seed(0)).eval()
        with torch.no_grad():
            model.last.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
            x = torch.randn(1, 1, 8192, generator=torch.Generator().manual_seed(2))
            residual = (model(x) - x)[0, 0, 1024:-1024]  # away from the ends
        spectra.append(torch.fft.rfft(residual).abs() ** 2)
    hz = torch.fft.rfftfreq(6144, 1 / 16000)
    below, above = hz < 1300, hz > 1700
    whole, high_passed = spectra
    assert high_passed[below].sum() < 1e-3 * whole[below].sum()
    assert float(high_passed[above].sum()) == pytest.approx(float(whole[above].sum()), rel=0.05)
    with pytest.raises(ValueError, match="keep_below"):
        dataclasses.replace(config, keep_below=0.0)
