"""Super-resolution metrics: SNR in dB and log-spectral distance (LSD) as NU-Wave defines it.

LSD (Lee & Han 2021, NU-Wave): power spectrograms with n_fft 2048, hop 512, a Hann window,
log10 of the power (floored at 1e-8), then the root-mean-square difference over frequency, then
the mean over frames. `lsd_hf` is the same restricted to the bins above the low-resolution
Nyquist frequency: the band the model has to invent, where the baselines have nothing.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

N_FFT = 2048
HOP = 512
POWER_FLOOR = 1e-8


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(|y|^2 / |y - y_hat|^2); +inf for a perfect estimate."""
    reference, estimate = _same_length(reference, estimate)
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    noise = float(np.sum((reference.astype(np.float64) - estimate) ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, 1e-20) / noise))


def spectrogram(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """The complex STFT, shape (frames, n_fft // 2 + 1); centred frames, reflect padding."""
    signal = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    if signal.numel() <= n_fft // 2:
        # Reflect padding needs more samples than half a frame; zero-pad very short signals.
        signal = torch.nn.functional.pad(signal, (0, n_fft // 2 + 1 - signal.numel()))
    spec = torch.stft(
        signal,
        n_fft,
        hop_length=hop,
        window=torch.hann_window(n_fft, dtype=torch.float64),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    return spec.T.numpy()


def power_spectrogram(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """|STFT|^2 (`spectrogram`), shape (frames, n_fft // 2 + 1)."""
    return torch.from_numpy(spectrogram(x, n_fft, hop)).abs().square().numpy()


def log_power_spectrogram(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """log10 |STFT|^2 (`power_spectrogram`), floored at `POWER_FLOOR`."""
    power = torch.from_numpy(power_spectrogram(x, n_fft, hop))
    return torch.log10(power.clamp_min(POWER_FLOOR)).numpy()


def band_energy_shares(
    reference: np.ndarray, signal: np.ndarray, rate: int, edges: list[float]
) -> list[float]:
    """The energy of `signal` in each band [edges[i], edges[i + 1]) Hz, as a share of the
    energy of `reference` over all bands. With `signal` an estimate's error (estimate -
    reference), this says in which band a method loses its SNR: the shares sum to about
    1 / 10^(SNR / 10)."""
    frequencies = np.fft.rfftfreq(N_FFT, 1 / rate)
    reference_power = power_spectrogram(reference).sum(axis=0)
    power = power_spectrogram(signal).sum(axis=0)
    total = max(float(reference_power.sum()), 1e-20)
    return [
        float(power[(frequencies >= low) & (frequencies < high)].sum()) / total
        for low, high in itertools.pairwise(edges)
    ]


def band_cross_powers(
    reference: np.ndarray, estimate: np.ndarray, rate: int, edges: list[float]
) -> np.ndarray:
    """Per band [edges[i], edges[i + 1]) Hz: the sums over frames and bins of Re(R conj(E)),
    |R|^2 and |E|^2 of the two STFTs, shape (bands, 3). Summed over files, the first over the
    square root of the product of the others is the band's correlation between estimate and
    reference: 1 for the right amplitude and phase, near 0 for a band of the right level and
    an unrelated phase (which adds its own energy to the error)."""
    frequencies = np.fft.rfftfreq(N_FFT, 1 / rate)
    ref, est = spectrogram(reference), spectrogram(estimate)
    rows = []
    for low, high in itertools.pairwise(edges):
        band = (frequencies >= low) & (frequencies < high)
        r, e = ref[:, band], est[:, band]
        rows.append([np.sum((r * e.conj()).real), np.sum(np.abs(r) ** 2), np.sum(np.abs(e) ** 2)])
    return np.array(rows, dtype=np.float64)


def high_band_start(ratio: int, n_fft: int = N_FFT) -> int:
    """First STFT bin strictly above the low-resolution Nyquist frequency (hr_rate / 2 / ratio)."""
    return n_fft // (2 * ratio) + 1


def lsd(reference: np.ndarray, estimate: np.ndarray, first_bin: int = 0) -> float:
    reference, estimate = _same_length(reference, estimate)
    diff = log_power_spectrogram(reference) - log_power_spectrogram(estimate)
    diff = diff[:, first_bin:]
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=1))))


def evaluate_pair(reference: np.ndarray, estimate: np.ndarray, ratio: int) -> dict[str, float]:
    """The metrics of one file: snr_db, lsd, lsd_hf."""
    return {
        "snr_db": snr_db(reference, estimate),
        "lsd": lsd(reference, estimate),
        "lsd_hf": lsd(reference, estimate, first_bin=high_band_start(ratio)),
    }


def lsd_parts_mean_at_spline_snr(parts: dict[str, dict[str, float]]) -> float:
    """The mean over the parts (summaries with lsd, sinc_lsd, snr_db, spline_snr_db) of the
    model's LSD where its SNR is at least the spline's, else of the sinc's: a part whose
    waveform is worse than the spline's earns no credit for its spectrum. One number for the
    two-sided aim (the LSD down, the SNR held), so a lower painted band that gives back SNR
    for LSD is weighed as a whole."""
    return float(
        np.mean(
            [
                part["lsd"] if part["snr_db"] >= part["spline_snr_db"] else part["sinc_lsd"]
                for part in parts.values()
            ]
        )
    )


def _same_length(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"reference has {a.size} samples but the estimate has {b.size}")
    return a, b
