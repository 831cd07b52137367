"""SNR and LSD (NU-Wave's definition) on signals whose answers are known."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
from scipy import signal as sps

from models.audio.metrics import (
    band_cross_powers,
    band_energy_shares,
    evaluate_pair,
    high_band_start,
    log_power_spectrogram,
    lsd,
    lsd_parts_mean_at_spline_snr,
    snr_db,
)

RATE = 16000


def music_like(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Harmonic tones with decaying partials up to near Nyquist, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = np.zeros_like(t)
    for f0 in (220.0, 277.2, 329.6):
        for k in range(1, 30):
            if k * f0 < RATE / 2:
                x += np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k
    x += 0.01 * rng.standard_normal(len(t))
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def test_snr_of_a_known_noise_level() -> None:
    x = music_like()
    noise = np.random.default_rng(1).standard_normal(len(x))
    noise *= np.sqrt(np.sum(x.astype(np.float64) ** 2) / np.sum(noise**2)) / 10.0  # -20 dB
    assert snr_db(x, x + noise) == pytest.approx(20.0, abs=1e-6)
    assert snr_db(x, x) == float("inf")
    assert snr_db(x, np.zeros_like(x)) == pytest.approx(0.0)


def test_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="reference has 10 samples but the estimate has 9"):
        snr_db(np.ones(10), np.ones(9))


def test_log_power_spectrogram_matches_librosa() -> None:
    x = music_like(1.3)
    ours = log_power_spectrogram(x)
    spec = librosa.stft(
        x.astype(np.float64), n_fft=2048, hop_length=512, window="hann", pad_mode="reflect"
    )
    theirs = np.log10(np.maximum(np.abs(spec) ** 2, 1e-8)).T
    assert ours.shape == (1 + len(x) // 512, 1025)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_lsd_of_a_scaled_signal_is_twice_the_log_gain() -> None:
    # |10 x|^2 is 100 |x|^2 in every bin: the log10 powers differ by exactly 2 (except in the
    # rare bins under the 1e-8 power floor).
    x = music_like()
    assert lsd(x, x) == 0.0
    assert lsd(x, 10.0 * x) == pytest.approx(2.0, abs=1e-3)


def test_high_band_lsd_sees_what_a_lowpass_removed() -> None:
    x = music_like()
    ratio = 4
    assert high_band_start(ratio) == 257  # bins above 2 kHz at 16 kHz, n_fft 2048
    sos = sps.butter(12, 0.9 / ratio, output="sos")
    low = sps.sosfiltfilt(sos, x).astype(np.float32)
    full = lsd(x, low)
    high = lsd(x, low, first_bin=high_band_start(ratio))
    diff = log_power_spectrogram(x) - log_power_spectrogram(low)
    low_band = np.mean(np.sqrt(np.mean(diff[:, : int(0.8 * 1024 / ratio)] ** 2, axis=1)))
    assert high > full > 1.0
    assert low_band < 0.2
    metrics = evaluate_pair(x, low, ratio)
    assert metrics == {"snr_db": snr_db(x, low), "lsd": full, "lsd_hf": high}


def test_band_energy_shares_split_the_error_that_the_snr_counts():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(16000).astype(np.float32)
    t = np.arange(16000) / 16000
    error = (0.05 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)  # all of it near 3 kHz
    edges = [0.0, 2000.0, 4000.0, 8001.0]
    shares = band_energy_shares(reference, error, 16000, edges)
    assert sum(band_energy_shares(reference, reference, 16000, edges)) == pytest.approx(1.0)
    assert sum(shares) == pytest.approx(
        10 ** (-snr_db(reference, reference + error) / 10), rel=0.02
    )
    assert shares[1] > 0.99 * sum(shares)


def test_band_cross_powers_tell_a_coherent_band_from_one_of_the_right_level_only() -> None:
    rate, rng = 16000, np.random.default_rng(3)
    reference = music_like(2.0)
    spectrum = np.fft.rfft(reference)
    high = np.fft.rfftfreq(reference.size, 1 / rate) >= 2000
    # The same magnitudes above 2 kHz with phases drawn at random: right level, wrong phase.
    scrambled = spectrum.copy()
    scrambled[high] = np.abs(spectrum[high]) * np.exp(2j * np.pi * rng.random(high.sum()))
    estimate = np.fft.irfft(scrambled, reference.size)
    edges = [0.0, 2000.0, 8000.0]

    def correlation(sums: np.ndarray) -> np.ndarray:
        return sums[:, 0] / np.sqrt(sums[:, 1] * sums[:, 2])

    assert correlation(band_cross_powers(reference, reference, rate, edges)) == pytest.approx(1.0)
    low, high_band = correlation(band_cross_powers(reference, estimate, rate, edges))
    assert low > 0.99
    assert abs(high_band) < 0.1
    levels = band_cross_powers(reference, estimate, rate, edges)
    assert levels[1, 2] == pytest.approx(levels[1, 1], rel=0.1)  # yet the level is right


def test_the_parts_headline_credits_a_parts_lsd_only_where_its_snr_holds_the_splines() -> None:
    parts = {
        "speech": {"lsd": 1.0, "sinc_lsd": 5.0, "snr_db": 10.0, "spline_snr_db": 10.0},
        "music": {"lsd": 0.5, "sinc_lsd": 2.0, "snr_db": 22.0, "spline_snr_db": 22.1},
    }
    assert lsd_parts_mean_at_spline_snr(parts) == pytest.approx((1.0 + 2.0) / 2)
    parts["music"]["snr_db"] = 22.2
    assert lsd_parts_mean_at_spline_snr(parts) == pytest.approx((1.0 + 0.5) / 2)
