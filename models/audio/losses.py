"""Losses of the audio models beyond the waveform's mean squared error."""

from __future__ import annotations

from collections.abc import Callable

import torch

# Added to a patch's mean power in `relative_mse`: -60 dBFS, so the tiny error of a silent
# patch is not blown up into a large loss.
POWER_FLOOR = 1e-6


def relative_mse(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each patch's squared error over its power (the inverse of its SNR, linear), averaged
    over the patches of (B, ..., L) signals. Unlike the plain MSE it does not change with
    loudness, so its balance with the scale-free STFT term is the same for every patch."""
    dims = tuple(range(1, target.dim()))
    error = torch.mean((estimate - target) ** 2, dim=dims)
    return torch.mean(error / (torch.mean(target**2, dim=dims) + POWER_FLOOR))


def _norm(
    x: torch.Tensor, over_ranks: Callable[[torch.Tensor], torch.Tensor] | None
) -> torch.Tensor:
    if over_ranks is None:
        return torch.linalg.norm(x)
    return torch.sqrt(over_ranks(x.square().sum()))


def stft_loss(
    estimate: torch.Tensor,
    target: torch.Tensor,
    resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512)),
    over_ranks: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Multi-resolution STFT loss (Yamamoto et al. 2020): spectral convergence + log-magnitude
    L1, averaged over the resolutions. Signals are (B, L).

    The spectral convergence is a ratio of norms over the whole batch, not a mean of per-row
    terms: in a data-parallel run `over_ranks` (`models.distributed.differentiable_sum`) sums
    its squares over the ranks' rows, so every rank computes the global batch's loss."""
    total = estimate.new_zeros(())
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=estimate.device)
        mags = [
            torch.stft(s, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-7)
            for s in (estimate, target)
        ]
        convergence = _norm(mags[1] - mags[0], over_ranks) / _norm(mags[1], over_ranks)
        log_l1 = torch.mean(torch.abs(torch.log(mags[1]) - torch.log(mags[0])))
        total = total + convergence + log_l1
    return total / len(resolutions)
