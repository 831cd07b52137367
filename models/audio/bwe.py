"""A light spectral bandwidth-extension network in the manner of AP-BWE (Lu et al., TASLP 2024).

Where the U-Net works on samples, this network works on the short-time spectrum of the same
input (the low-resolution signal interpolated to the high rate) and predicts amplitude and
phase in two parallel streams that talk to each other:

    STFT -> log amplitude  -> Conv1d(bins -> C) -> [ConvNeXt block] x N -> Conv1d(C -> bins)
         -> phase (cos, sin) -> Conv1d(2 bins -> C) -> [ConvNeXt block] x N -> two Conv1d(C -> bins)
    after every block each stream adds a 1x1 projection of the other's features
    log amplitude = w x input's + predicted change (w per bin: 1, or learned from 1 with
    `learned_amplitude_skip`);  phase = atan2(sin + dI, cos + dR)
    below `keep_below` of the input's band (at inference up to `pass_below`, calibrated): the
    input's own spectrum, undoing the spline's droop
    above the input's Nyquist frequency: times `high_band_gain` (1 in training; calibrated)
    -> inverse STFT at the input's length

Frames are the time axis and frequency bins the channels, so every convolution runs at the
frame rate (hop samples), not the sample rate: that is what makes it cheap on a CPU. Both
outputs start as the input's own spectrum (the last layers are initialised near zero), so an
untrained network returns its input, as the U-Net does. Where every anti-aliasing filter leaves
the input's band whole (most of speech's and music's energy) nothing is predicted at all: a
pilot lost 1 dB of SNR to a network re-predicting a band it was given. The published model adds
GAN discriminators and phase losses; here it trains with the pipeline's waveform loss (the
relative MSE) and the multi-resolution STFT term, which a CPU budget allows.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.audio.config import BWEConfig

LOG_FLOOR = 1e-5  # amplitude floor before the log (about -100 dB)


def spline_response(config: BWEConfig, start: int, stop: int) -> torch.Tensor:
    """The frequency response of cubic-spline interpolation (the model's input) at the bins
    [start, stop): sinc(x)^4 * 3 / (2 + cos 2 pi x), x the frequency over the low sample rate
    (the cardinal cubic spline's; `datasets.audio.signals.spline_upsample` away from the ends)."""
    x = torch.arange(start, stop, dtype=torch.float64) * config.ratio / config.n_fft
    response = torch.sinc(x) ** 4 * 3 / (2 + torch.cos(2 * torch.pi * x))
    return response.float()


class ConvNeXtBlock(nn.Module):
    """Depthwise conv over frames -> LayerNorm -> pointwise MLP (GELU) -> scaled residual."""

    def __init__(self, channels: int, kernel: int, expansion: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.expand = nn.Linear(channels, expansion * channels)
        self.project = nn.Linear(expansion * channels, channels)
        self.scale = nn.Parameter(torch.full((channels,), 1e-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(x).transpose(1, 2)  # (B, T, C) for the norm and the MLP
        h = self.project(F.gelu(self.expand(self.norm(h))))
        return x + (self.scale * h).transpose(1, 2)


class BandwidthExtender(nn.Module):
    def __init__(self, config: BWEConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        bins, c = config.n_fft // 2 + 1, config.channels
        self.amp_in = nn.Conv1d(bins, c, config.kernel, padding=config.kernel // 2)
        self.pha_in = nn.Conv1d(2 * bins, c, config.kernel, padding=config.kernel // 2)
        self.amp_norm, self.pha_norm = nn.LayerNorm(c), nn.LayerNorm(c)
        block = lambda: ConvNeXtBlock(c, config.kernel, config.expansion)  # noqa: E731
        self.amp_blocks = nn.ModuleList(block() for _ in range(config.layers))
        self.pha_blocks = nn.ModuleList(block() for _ in range(config.layers))
        self.pha_to_amp = nn.ModuleList(nn.Conv1d(c, c, 1) for _ in range(config.layers))
        self.amp_to_pha = nn.ModuleList(nn.Conv1d(c, c, 1) for _ in range(config.layers))
        self.amp_out = nn.Conv1d(c, bins, 1)
        self.real_out = nn.Conv1d(c, bins, 1)
        self.imag_out = nn.Conv1d(c, bins, 1)
        if config.learned_amplitude_skip:
            self.amp_skip = nn.Parameter(torch.ones(bins))
        # Log gain of the kept low bins: the inverse of the spline interpolation's response, so
        # the kept band is what an ideal (sinc) interpolation gives. A fixed buffer: learned, it
        # shrank to 0.78 on bins near 1.5 kHz (the inputs made without an anti-aliasing filter
        # carry aliases there), which cost 0.2-0.6 dB of SNR on clean inputs.
        self.register_buffer("low_gain", -torch.log(spline_response(config, 0, config.kept_bins)))
        self.register_buffer("window", torch.hann_window(config.win), persistent=False)
        self._init_weights(generator)

    def _init_weights(self, generator: torch.Generator | None) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv1d | nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02, generator=generator)
                nn.init.zeros_(module.bias)
        for last in (self.amp_out, self.real_out, self.imag_out):
            nn.init.normal_(last.weight, std=1e-4, generator=generator)

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        return torch.stft(x, c.n_fft, c.hop, c.win, self.window, center=True, return_complex=True)

    def _spectra(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, 1, L) -> the output's spectrum up to the input's Nyquist frequency (the kept,
        passed and predicted bins) and above it at the trained level, (B, bins, frames) each
        over their own bins."""
        c = self.config
        spectrum = self._stft(x[:, 0])  # (B, bins, frames)
        log_amp = torch.log(spectrum.abs().clamp_min(LOG_FLOOR))
        phase = torch.angle(spectrum)
        cos, sin = torch.cos(phase), torch.sin(phase)
        a = self.amp_norm(self.amp_in(log_amp).transpose(1, 2)).transpose(1, 2)
        p = self.pha_norm(self.pha_in(torch.cat([cos, sin], 1)).transpose(1, 2)).transpose(1, 2)
        for amp_block, pha_block, p2a, a2p in zip(
            self.amp_blocks, self.pha_blocks, self.pha_to_amp, self.amp_to_pha, strict=True
        ):
            a, p = amp_block(a), pha_block(p)
            a, p = a + p2a(p), p + a2p(a)
        if c.learned_amplitude_skip:
            log_amp = self.amp_skip[None, :, None] * log_amp
        amp = torch.exp(log_amp + self.amp_out(a))
        out_phase = torch.atan2(sin + self.imag_out(p), cos + self.real_out(p))
        out = torch.polar(amp, out_phase)
        kept = spectrum[:, : c.kept_bins] * torch.exp(self.low_gain)[None, :, None]
        # `pass_below` is read here, per call: calibration changes it.
        droop = spline_response(c, c.kept_bins, c.pass_bins).to(spectrum.device)
        passed = spectrum[:, c.kept_bins : c.pass_bins] / droop[None, :, None]
        predicted = out[:, c.pass_bins : c.nyquist_bin]
        return torch.cat([kept, passed, predicted], dim=1), out[:, c.nyquist_bin :]

    def _istft(self, spectrum: torch.Tensor, length: int) -> torch.Tensor:
        c = self.config
        return torch.istft(spectrum, c.n_fft, c.hop, c.win, self.window, center=True, length=length)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x: (B, 1, L) interpolated low-res signal -> (B, 1, L), the band above the input's
        Nyquist frequency at `high_band_gain` (read per call: calibration changes it).
        `generator` is unused (no dropout); it is taken so both audio models share one call."""
        below, above = self._spectra(x)
        out = torch.cat([below, self.config.high_band_gain * above], dim=1)
        return self._istft(out, x.shape[-1])[:, None, :]

    def bands(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, L) -> (B, 2, L): the output up to the input's Nyquist frequency, and the
        band above it at the trained level; forward's output is the first plus
        `high_band_gain` times the second (`models.audio.infer.superresolve` sets a level per
        input from them, `BWEConfig.high_band_budget`)."""
        below, above = self._spectra(x)
        both = torch.cat(
            [
                torch.cat([below, torch.zeros_like(above)], dim=1),
                torch.cat([torch.zeros_like(below), above], dim=1),
            ]
        )
        return self._istft(both, x.shape[-1]).reshape(2, x.shape[0], -1).transpose(0, 1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
