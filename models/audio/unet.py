"""The AudioUNet of Kuleshov, Enam & Ermon (2017), "Audio Super-Resolution using Neural Networks".

The network maps the low-resolution signal, already interpolated to the high rate (cubic spline,
as in the paper), to the high-resolution signal:

    down blocks    Conv1d(stride 2) -> LeakyReLU(0.2)                 (length / 2 each)
    bottleneck     Conv1d(stride 2) -> Dropout -> LeakyReLU(0.2)
    up blocks      Conv1d(2 * width) -> Dropout -> ReLU -> subpixel x2 -> concat(skip)
    last           Conv1d(2 channels, kernel 9) -> subpixel x2 -> + input   (additive residual)
    keep_below     the residual high-passed there (`keep_input_band`; off in every preset)

The paper's code uses widths 128, 384, 512, 512, ... and kernels 65, 33, 17, 9, 9, ... with four
blocks; the bottleneck takes the last width and kernel. Weights start orthogonal, biases at zero,
the last layer near zero (normal, std 1e-3), so an untrained model returns its input.
The ratio does not change the network (input and output have the same length); it is kept in the
config so a checkpoint says what it was trained for.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.audio.config import AudioUNetConfig


def subpixel_1d(x: torch.Tensor, r: int) -> torch.Tensor:
    """(B, C * r, L) -> (B, C, L * r): the 1-D subpixel shuffle (channels become time steps)."""
    batch, channels, length = x.shape
    x = x.view(batch, r, channels // r, length).permute(0, 2, 3, 1)
    return x.reshape(batch, channels // r, length * r)


def seeded_dropout(
    x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Dropout whose mask comes from `generator`: `F.dropout` draws from the process-global RNG,
    which would make seeded runs on threads race each other."""
    if not training or p == 0.0:
        return x
    if generator is None:
        return F.dropout(x, p, training=True)
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep / (1.0 - p)


# The STFT that splits the U-Net's residual at `keep_below` (32 ms frames at 16 kHz).
KEEP_FFT, KEEP_HOP = 512, 128


def keep_input_band(x: torch.Tensor, y: torch.Tensor, share: float, ratio: int) -> torch.Tensor:
    """`y` with its difference from the input `x` (both (B, 1, L)) removed below `share` of
    the input's Nyquist frequency (1 / (2 ratio) of the rate): there the output is `x`."""
    window = torch.hann_window(KEEP_FFT, device=x.device)
    residual = torch.stft((y - x)[:, 0], KEEP_FFT, KEEP_HOP, window=window, return_complex=True)
    cut = round(share * (KEEP_FFT // 2) / ratio)
    residual = torch.cat([torch.zeros_like(residual[:, :cut]), residual[:, cut:]], dim=1)
    kept = torch.istft(residual, KEEP_FFT, KEEP_HOP, window=window, length=x.shape[-1])
    return x + kept[:, None, :]


class AudioUNet(nn.Module):
    def __init__(self, config: AudioUNetConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        widths, kernels = config.widths, config.kernels
        self.down = nn.ModuleList()
        channels = 1
        for width, kernel in zip(widths, kernels, strict=True):
            self.down.append(nn.Conv1d(channels, width, kernel, stride=2, padding=kernel // 2))
            channels = width
        self.bottleneck = nn.Conv1d(
            channels, widths[-1], kernels[-1], stride=2, padding=kernels[-1] // 2
        )
        channels = widths[-1]
        self.up = nn.ModuleList()
        for width, kernel in zip(reversed(widths), reversed(kernels), strict=True):
            self.up.append(nn.Conv1d(channels, 2 * width, kernel, padding=kernel // 2))
            channels = 2 * width  # width after the shuffle, plus the skip's width
        self.last = nn.Conv1d(channels, 2, 9, padding=4)
        self._init_weights(generator)

    def _init_weights(self, generator: torch.Generator | None) -> None:
        for conv in [*self.down, self.bottleneck, *self.up]:
            nn.init.orthogonal_(conv.weight, generator=generator)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.last.weight, std=1e-3, generator=generator)
        nn.init.zeros_(self.last.bias)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x: (B, 1, L) interpolated low-res signal, L a multiple of `config.multiple`."""
        if x.shape[-1] % self.config.multiple:
            raise ValueError(
                f"input length {x.shape[-1]} is not a multiple of {self.config.multiple}"
            )
        p = self.config.dropout
        skips = []
        h = x
        for conv in self.down:
            h = F.leaky_relu(conv(h), 0.2)
            skips.append(h)
        h = F.leaky_relu(seeded_dropout(self.bottleneck(h), p, self.training, generator), 0.2)
        for conv, skip in zip(self.up, reversed(skips), strict=True):
            h = F.relu(seeded_dropout(conv(h), p, self.training, generator))
            h = torch.cat([subpixel_1d(h, 2), skip], dim=1)
        y = x + subpixel_1d(self.last(h), 2)
        if self.config.keep_below is None:
            return y
        return keep_input_band(x, y, self.config.keep_below, self.config.ratio)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
