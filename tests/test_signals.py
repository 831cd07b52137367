"""The signal code checked against sampling and quantization theory."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import signal as sps

from datasets.audio.files import load_audio
from datasets.audio.signals import (
    FILTERS,
    RATIOS,
    STOPBAND_DB,
    STOPBAND_START,
    UNSEEN_FILTERS,
    alias_frequency,
    band_edge_hz,
    crossover,
    decimate,
    has_sharp_band_edge,
    quantize_uniform,
    sar_quantize,
    sinc_upsample,
    spline_upsample,
    sqnr_db,
    sqnr_theory_db,
)

FS = 16000
DEMO_RECORDINGS = Path(__file__).parents[1] / "datasets" / "audio" / "demo"


def tone(freq: float, n: int = FS, amplitude: float = 0.99, fs: int = FS) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(n) / fs)).astype(np.float32)


def amplitude_of(x: np.ndarray, freq: float, fs: float) -> float:
    """Amplitude of the component at `freq`, by projection on a quadrature pair (middle half)."""
    n = len(x)
    idx = np.arange(n // 4, 3 * n // 4)
    seg = x[idx].astype(np.float64)
    c = np.cos(2 * np.pi * freq * idx / fs)
    s = np.sin(2 * np.pi * freq * idx / fs)
    return float(np.hypot(seg @ c / (c @ c), seg @ s / (s @ s)))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, 12, 16, 24])
def test_sar_equals_uniform_mid_tread(bits: int) -> None:
    rng = np.random.default_rng(bits)
    x = rng.uniform(-1.2, 1.2, 20000)
    step = 2.0 ** (1 - bits)
    # Exact level boundaries are where a comparator and a rounding rule could disagree.
    edges = (np.arange(-(2 ** (bits - 1)), 2 ** (bits - 1)) + 0.5) * step
    x = np.concatenate([x, edges[:: max(1, len(edges) // 1000)], [-1.0, 0.0, 1.0]])
    q = sar_quantize(x, bits)
    np.testing.assert_array_equal(q, quantize_uniform(x, bits))
    inside = np.abs(x) < 1 - step
    assert np.max(np.abs(q[inside] - x[inside]), initial=0.0) <= step / 2 + 1e-12
    assert q.min() >= -1.0
    assert q.max() <= 1 - step


def test_mid_tread_has_a_zero_level() -> None:
    assert sar_quantize(np.array([0.0, 1e-6, -1e-6]), 4).tolist() == [0.0, 0.0, 0.0]


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 64), elements=st.floats(-2, 2, allow_nan=False)),
    st.integers(1, 20),
)
def test_sar_equals_uniform_property(x: np.ndarray, bits: int) -> None:
    np.testing.assert_array_equal(sar_quantize(x, bits), quantize_uniform(x, bits))


@pytest.mark.parametrize("bits", range(4, 17))
def test_sqnr_of_full_scale_sine_matches_theory(bits: int) -> None:
    # Full scale: the sine swings from the lowest output level (-1) to the highest (1 - step),
    # so its centre sits half a step below zero. An incommensurate frequency spreads the error
    # over all levels, the uniform-error model the 6.02 N + 1.76 dB figure rests on.
    step = 2.0 ** (1 - bits)
    sine = (1 - step / 2) * np.sin(2 * np.pi * 1000 * math.sqrt(2) * np.arange(200_000) / FS)
    x = sine - step / 2
    error = x - sar_quantize(x, bits)
    measured = 10 * np.log10(np.mean(sine**2) / np.mean(error**2))
    assert abs(measured - sqnr_theory_db(bits)) < 0.5, (bits, measured)
    assert sqnr_db(x, sar_quantize(x, bits)) > sqnr_theory_db(bits) - 0.5


def test_bits_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="bits"):
        sar_quantize(np.zeros(3), 0)


@pytest.mark.parametrize(
    ("ratio", "freq"),
    [(r, f) for r in RATIOS for f in (2500.0, 5100.0, 7300.0) if f > FS / r / 2],
)
def test_aliased_tone_lands_at_alias_frequency(ratio: int, freq: float) -> None:
    fs_low = FS / ratio
    y = decimate(tone(freq), ratio, "none")
    expected = alias_frequency(freq, fs_low)
    assert expected <= fs_low / 2
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak = np.argmax(spectrum) * fs_low / len(y)
    assert abs(peak - expected) <= fs_low / len(y) + 1e-9
    assert amplitude_of(y, expected, fs_low) == pytest.approx(0.99, rel=0.02)


def test_alias_frequency_folds() -> None:
    assert alias_frequency(5000, 4000) == 1000
    assert alias_frequency(3000, 4000) == 1000
    assert alias_frequency(1500, 4000) == 1500


@pytest.mark.parametrize("old_rate", [6000, 8000, 11025])
def test_a_file_resampled_up_from_a_lower_rate_shows_its_old_band_edge(old_rate: int) -> None:
    """Noise and the two real recordings, taken to `old_rate` (by each filter, so aliases or a
    gradual filter's droop sit under the edge) and back up to 16 or 44.1 kHz with soxr: the
    edge is found at 0.85-1 of the old Nyquist frequency (the Chebyshev's band is 21 dB down
    at 0.9 of it); at their own rate none is."""
    noise = np.random.default_rng(0).standard_normal(4 * FS).astype(np.float32) * 0.1
    recordings = [load_audio(path, FS)[: 6 * FS] for path in sorted(DEMO_RECORDINGS.glob("*.flac"))]
    for signal in (noise, *recordings):
        assert band_edge_hz(signal, FS, FS / 2) is None
        # The pipeline's filters decimate by integers: 16 kHz to 8 kHz of the three rates.
        for filt in ("soxr", "none", "cheby") if FS % old_rate == 0 else ("soxr",):
            old = (
                decimate(signal, FS // old_rate, filt)
                if filt != "soxr"
                else soxr.resample(signal, FS, old_rate)
            )
            for rate in (FS, 44100):
                edge = band_edge_hz(soxr.resample(old, old_rate, rate), rate, FS / 2)
                assert edge is not None, (filt, rate)
                assert 0.85 <= edge / (old_rate / 2) <= 1.0, (filt, rate)


def test_a_gradual_roll_off_silence_and_short_signals_have_no_band_edge() -> None:
    noise = np.random.default_rng(0).standard_normal(4 * FS)
    # 12 dB per octave from 500 Hz: 48 dB down at 8 kHz, but no cliff.
    rolled_off = sps.sosfilt(sps.butter(2, 500, fs=FS, output="sos"), noise)
    assert band_edge_hz(rolled_off, FS, FS / 2) is None
    assert band_edge_hz(np.zeros(FS), FS, FS / 2) is None
    short = soxr.resample(soxr.resample(noise, FS, 8000), 8000, FS)[:200]
    assert band_edge_hz(short, FS, FS / 2) is None


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("filt", FILTERS + UNSEEN_FILTERS)
def test_each_filter_meets_its_stopband_figure(ratio: int, filt: str) -> None:
    fs_low = FS / ratio
    nyquist = fs_low / 2
    for freq in np.linspace(STOPBAND_START * nyquist, 0.97 * FS / 2, 9):
        y = decimate(tone(freq), ratio, filt)
        alias = alias_frequency(freq, fs_low)
        if alias < 1.0 or alias > nyquist - 1.0:
            continue  # DC and Nyquist aliases cannot be told apart from a phase
        attenuation = -20 * np.log10(max(amplitude_of(y, alias, fs_low), 1e-12) / 0.99)
        assert attenuation >= STOPBAND_DB[filt] - 0.01, (filt, ratio, freq, attenuation)


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("filt", FILTERS + UNSEEN_FILTERS)
def test_filters_pass_the_band_and_keep_length_and_alignment(ratio: int, filt: str) -> None:
    fs_low = FS / ratio
    freq = 0.3 * fs_low / 2
    x = tone(freq, n=FS + 5)
    y = decimate(x, ratio, filt)
    assert y.dtype == np.float32
    assert len(y) == math.ceil(len(x) / ratio)
    # Chebyshev I ripples by 0.05 dB, twice over when run forwards and backwards.
    assert amplitude_of(y, freq, fs_low) == pytest.approx(0.99, rel=0.012)
    # Sample k stands at input time k * ratio: it matches plain subsampling away from the ends.
    mid = slice(len(y) // 4, 3 * len(y) // 4)
    np.testing.assert_allclose(y[mid], x[::ratio][mid], atol=0.015)


@pytest.mark.parametrize("ratio", RATIOS)
def test_only_the_high_quality_resampler_leaves_a_sharp_band_edge(ratio: int) -> None:
    """White noise and the two real recordings in the repository: soxr keeps the band whole to
    0.95 of Nyquist and then falls steeply; Chebyshev and Butterworth fall gradually, and with
    the FIR, the elliptic filter or none the top of the band is filled with aliases."""
    noise = np.random.default_rng(0).standard_normal(4 * FS).astype(np.float32) * 0.1
    recordings = [load_audio(path, FS)[: 6 * FS] for path in sorted(DEMO_RECORDINGS.glob("*.flac"))]
    assert len(recordings) == 2
    for signal in (noise, *recordings):
        for filt in FILTERS + UNSEEN_FILTERS:
            assert has_sharp_band_edge(decimate(signal, ratio, filt)) == (filt == "soxr"), filt


def test_a_signal_too_short_or_silent_has_no_sharp_band_edge() -> None:
    noise = np.random.default_rng(0).standard_normal(FS).astype(np.float32)
    assert has_sharp_band_edge(decimate(noise, 4, "soxr"))
    assert not has_sharp_band_edge(decimate(noise[:800], 4, "soxr"))  # 200 samples
    assert not has_sharp_band_edge(np.zeros(4000, dtype=np.float32))


@pytest.mark.parametrize("filt", FILTERS + UNSEEN_FILTERS)
def test_decimate_handles_tiny_inputs(filt: str) -> None:
    for n in (0, 1, 2, 7):
        assert len(decimate(np.ones(n, dtype=np.float32), 4, filt)) == math.ceil(n / 4)


def test_decimate_refuses_unknown_ratio_and_filter() -> None:
    with pytest.raises(ValueError, match="ratio"):
        decimate(np.zeros(10), 5, "soxr")
    with pytest.raises(ValueError, match="filter"):
        decimate(np.zeros(10), 4, "bessel")  # type: ignore[arg-type]


def band_limited_basis(n: int, m: int) -> np.ndarray:
    """Real orthonormal-ish basis of the band-limited subspace of R^n: bins below m/2 (+ cos)."""
    t = np.arange(n)
    columns = [np.ones(n)]
    for k in range(1, (m + 1) // 2):
        columns += [np.cos(2 * np.pi * k * t / n), np.sin(2 * np.pi * k * t / n)]
    if m % 2 == 0:
        columns.append(np.cos(2 * np.pi * (m // 2) * t / n))
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("m", [5, 8, 9, 16])
@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_sinc_upsample_is_the_least_squares_band_limited_fit(m: int, ratio: int) -> None:
    rng = np.random.default_rng(m * 10 + ratio)
    lr = rng.standard_normal(m)
    n = m * ratio
    basis = band_limited_basis(n, m)
    coef, *_ = np.linalg.lstsq(basis[::ratio], lr, rcond=None)
    np.testing.assert_allclose(sinc_upsample(lr, ratio, n), basis @ coef, atol=1e-5)


# For odd lengths the band has no edge bin and the projection is exact; for even lengths the
# edge bin is shared by +/- frequencies (the least-squares test above covers them).
@pytest.mark.parametrize("m", [5, 7, 31])
def test_sinc_upsample_is_an_orthogonal_projection(m: int) -> None:
    ratio = 4
    n = m * ratio
    rng = np.random.default_rng(m)
    lr = rng.standard_normal(m)
    stuffed = np.zeros(n)
    stuffed[::ratio] = lr
    up = sinc_upsample(lr, ratio, n).astype(np.float64)
    basis = band_limited_basis(n, m)
    projection = basis @ np.linalg.lstsq(basis, ratio * stuffed, rcond=None)[0]
    np.testing.assert_allclose(up, projection, atol=1e-5)
    # Idempotent: projecting the projection changes nothing; it passes through every sample.
    np.testing.assert_allclose(sinc_upsample(up[::ratio], ratio, n), up, atol=1e-5)
    np.testing.assert_allclose(up[::ratio], lr, atol=1e-5)


def test_sinc_recovers_a_band_limited_signal_exactly() -> None:
    n, ratio = 4096, 4
    t = np.arange(n)
    x = np.sin(2 * np.pi * 37 * t / n) + 0.5 * np.cos(2 * np.pi * 300 * t / n)
    up = sinc_upsample(x[::ratio], ratio, n)
    assert sqnr_db(x, up) > 100


def test_spline_interpolates_and_beats_nothing_on_smooth_signals() -> None:
    x = tone(200.0, n=4000)
    lr = decimate(x, 4, "none")
    up = spline_upsample(lr, 4, len(x))
    np.testing.assert_allclose(up[::4], lr, atol=1e-6)
    assert sqnr_db(x, up) > 40
    assert len(spline_upsample(lr[:1], 4, 7)) == 7


def test_a_crossover_of_a_signal_with_itself_is_the_signal() -> None:
    x = np.random.default_rng(0).standard_normal(9001).astype(np.float32)
    np.testing.assert_allclose(crossover(x, x, 16000, 3900.0, 200.0), x, atol=1e-5)


def test_a_crossover_takes_each_band_from_its_own_signal() -> None:
    """Below the crossover the first signal's band, above it the second's; a tone 200 Hz from
    the edge is untouched by the other side."""
    rate, n = 16000, 16000
    low, high = tone(1000.0, n, fs=rate), tone(6000.0, n, fs=rate)
    out = crossover(low + 0.5 * high, 0.25 * low + high, rate, 3900.0, 200.0)
    assert sqnr_db(low + high, out) > 80
    near = tone(3700.0, n, fs=rate)
    assert sqnr_db(near, crossover(near, np.zeros(n), rate, 3900.0, 200.0)) > 80
    with pytest.raises(ValueError, match="crossover of"):
        crossover(low, high[:-1], rate, 3900.0, 200.0)
