"""Losses of the AudioUNet beyond the waveform's mean squared error."""

from __future__ import annotations

import torch


def stft_loss(
    estimate: torch.Tensor,
    target: torch.Tensor,
    resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512)),
) -> torch.Tensor:
    """Multi-resolution STFT loss (Yamamoto et al. 2020): spectral convergence + log-magnitude
    L1, averaged over the resolutions. Signals are (B, L)."""
    total = estimate.new_zeros(())
    for n_fft, hop in resolutions:
        window = torch.hann_window(n_fft, device=estimate.device)
        mags = [
            torch.stft(s, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-7)
            for s in (estimate, target)
        ]
        convergence = torch.linalg.norm(mags[1] - mags[0]) / torch.linalg.norm(mags[1])
        log_l1 = torch.mean(torch.abs(torch.log(mags[1]) - torch.log(mags[0])))
        total = total + convergence + log_l1
    return total / len(resolutions)
