"""Sampling, quantization, aliasing and reconstruction: the first half of the lecture as code.

Signals are float arrays in [-1, 1]. Everything here is a pure function over numpy arrays, so
the theory tests (SQNR of 6.02N + 1.76 dB, alias frequencies, projection = least squares) run
on exactly the code the pipeline uses to make its low-resolution inputs and baselines.

Length rule for decimation: every filter returns `ceil(len(x) / ratio)` samples, sample `k`
standing at time `k * ratio` of the input, so all filters line up with plain `x[::ratio]`.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import soxr
from scipy import interpolate
from scipy import signal as sps

FilterName = Literal["soxr", "cheby", "fir", "none", "butter", "ellip"]
# The filters pairs are made with (and `random` draws from).
FILTERS: tuple[FilterName, ...] = ("soxr", "cheby", "fir", "none")
# Filters no training set uses: the robustness study tests on them (filters a model never saw).
UNSEEN_FILTERS: tuple[FilterName, ...] = ("butter", "ellip")
RATIOS: tuple[int, ...] = (2, 3, 4, 6, 8)

# Attenuation each filter guarantees for a tone in its stop band, which starts at
# STOPBAND_START x the new Nyquist frequency (measured with a full-scale tone, tests/test_signals.py
# holds every filter to its figure for every ratio). `none` does not filter: its figure is 0 dB.
STOPBAND_START = 1.25
STOPBAND_DB: dict[str, float] = {
    "soxr": 100.0,
    "cheby": 80.0,
    "fir": 50.0,
    "none": 0.0,
    "butter": 40.0,
    "ellip": 40.0,  # a sixth-order transition: 43 dB at 1.25 x Nyquist, 120 dB deep past it
}
# The IIR filters' passband edges, as a share of the new Nyquist frequency.
IIR_PASSBAND = 0.9


def _levels(bits: int) -> int:
    if not 1 <= bits <= 24:
        raise ValueError(f"bits must be in 1..24, got {bits}")
    return 1 << (bits - 1)


def quantize_uniform(x: np.ndarray, bits: int) -> np.ndarray:
    """Uniform mid-tread quantization of [-1, 1) to `bits` bits, two's-complement range.

    Levels are k * 2**(1 - bits) for k in [-2**(bits-1), 2**(bits-1) - 1]; values round half up
    (what a comparator with thresholds at half steps does) and clip at the range ends.
    """
    half = _levels(bits)
    codes = np.clip(np.floor(np.asarray(x, dtype=np.float64) * half + 0.5), -half, half - 1)
    return (codes / half).astype(np.float32)


def sar_quantize(x: np.ndarray, bits: int) -> np.ndarray:
    """A successive-approximation ADC: binary search for the code, one bit per step from the MSB.

    Vectorized over samples: every step sets the trial bit on all samples at once and keeps it
    where the input is at or above the trial level's lower threshold (half a step below it).
    The result equals `quantize_uniform(x, bits)`.
    """
    half = _levels(bits)
    x = np.asarray(x, dtype=np.float64)
    code = np.zeros(x.shape, dtype=np.int64)  # offset binary: level = (code - half) / half
    for bit in range(bits - 1, -1, -1):
        trial = code | (1 << bit)
        threshold = (trial - half - 0.5) / half
        code = np.where(x >= threshold, trial, code)
    return ((code - half) / half).astype(np.float32)


def sqnr_db(reference: np.ndarray, approximation: np.ndarray) -> float:
    """Signal-to-(quantization-)noise ratio in dB: signal power over error power."""
    reference = np.asarray(reference, dtype=np.float64)
    error = reference - np.asarray(approximation, dtype=np.float64)
    return float(10.0 * np.log10(np.sum(reference**2) / max(np.sum(error**2), 1e-300)))


def sqnr_theory_db(bits: int) -> float:
    """The textbook SQNR of a full-scale sine through an ideal `bits`-bit quantizer."""
    return 6.02 * bits + 1.76


def alias_frequency(f: float, fs: float) -> float:
    """Where a tone at `f` Hz lands when sampled at `fs` Hz: |f - k fs| for the nearest k."""
    return abs(f - round(f / fs) * fs)


def decimate(x: np.ndarray, ratio: int, filter: FilterName = "soxr") -> np.ndarray:
    """Keep every `ratio`-th sample after the named anti-aliasing filter.

    `soxr`: libsoxr HQ (steep, linear phase); `cheby`: order-8 Chebyshev I run forwards and
    backwards (scipy's `decimate`); `fir`: polyphase FIR with a Kaiser window (`resample_poly`);
    `none`: plain `x[::ratio]`, aliased on purpose; `butter` (order-8 Butterworth) and `ellip`
    (order-6 elliptic, 0.01 dB ripple, 60 dB stop), both from 0.9 x the new Nyquist frequency and
    run forwards and backwards, are kept out of training (`UNSEEN_FILTERS`). Returns float32 of
    length ceil(len/ratio).
    """
    if ratio not in RATIOS:
        raise ValueError(f"ratio must be one of {RATIOS}, got {ratio}")
    x = np.asarray(x, dtype=np.float32)
    n_out = math.ceil(len(x) / ratio)
    if filter == "none":
        return x[::ratio].copy()
    if filter == "soxr":
        out = soxr.resample(x, ratio, 1, quality="HQ")
    elif filter == "cheby":
        # filtfilt needs more than 3 * (order + 1) samples; shorter inputs are padded with zeros.
        padded = np.pad(x, (0, max(0, 28 - len(x))))
        out = sps.decimate(padded, ratio, n=8, ftype="iir", zero_phase=True)
    elif filter == "fir":
        out = sps.resample_poly(x, 1, ratio)
    elif filter in ("butter", "ellip"):
        edge = IIR_PASSBAND / ratio
        sos = (
            sps.butter(8, edge, output="sos")
            if filter == "butter"
            else sps.ellip(6, 0.01, 60, edge, output="sos")
        )
        # sosfiltfilt's edge padding needs more samples than a few; shorter inputs get zeros.
        padded = np.pad(x, (0, max(0, 3 * (2 * len(sos) + 1) + 1 - len(x))))
        out = sps.sosfiltfilt(sos, padded)[::ratio]
    else:
        raise ValueError(f"unknown filter {filter!r}; expected one of {FILTERS + UNSEEN_FILTERS}")
    out = np.asarray(out, dtype=np.float32)[:n_out]
    return np.pad(out, (0, n_out - len(out)))


def sinc_upsample(lr: np.ndarray, ratio: int, n_out: int) -> np.ndarray:
    """Band-limited reconstruction: the orthogonal projection onto the band-limited subspace.

    Zero-stuffing `lr` to `len(lr) * ratio` samples and keeping only the DFT bins below the low
    rate's Nyquist frequency (times `ratio`, to restore the energy) is an orthogonal projection;
    in the frequency domain it is zero-padding the spectrum. The low rate's Nyquist bin is split
    evenly between +/- frequencies, so the result is real and passes through every `lr` sample.
    The signal is treated as periodic (the DFT's assumption). Trimmed or zero-padded to `n_out`.
    """
    lr = np.asarray(lr, dtype=np.float64)
    m = len(lr)
    n = m * ratio
    spectrum = np.fft.rfft(lr)
    padded = np.zeros(n // 2 + 1, dtype=np.complex128)
    padded[: len(spectrum)] = spectrum
    if m % 2 == 0 and m > 0:
        padded[m // 2] *= 0.5
    up = np.fft.irfft(padded, n=n) * ratio if m else np.zeros(0)
    return _fit_length(up, n_out)


def spline_upsample(lr: np.ndarray, ratio: int, n_out: int) -> np.ndarray:
    """Cubic-spline interpolation of the low-rate samples at every high-rate instant.

    `lr[k]` stands at high-rate index `k * ratio` (the decimation length rule); instants past
    the last sample are extrapolated by the end polynomial, as a spline baseline does.
    """
    lr = np.asarray(lr, dtype=np.float64)
    if len(lr) < 2:
        return np.full(n_out, lr[0] if len(lr) else 0.0, dtype=np.float32)
    spline = interpolate.CubicSpline(np.arange(len(lr)) * ratio, lr, bc_type="not-a-knot")
    return spline(np.arange(n_out)).astype(np.float32)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.float32)
    keep = min(n, len(x))
    out[:keep] = x[:keep]
    return out


# A sharp band edge, as a high-quality resampler leaves it: the band whole to about 0.95 of the
# Nyquist frequency, then tens of dB lower in the last few per cent. Measured on white noise
# decimated 4x, the level at 0.90-0.94 over that at 0.975-0.995 of Nyquist: soxr 40 dB, Chebyshev
# 17 (its band already 21 dB down at 0.9), Butterworth 5, FIR 1, none and elliptic 0 (their
# aliases fill the top of the band).
SHARP_EDGE_BELOW = (0.9, 0.94)  # shares of the Nyquist frequency just below the edge
SHARP_EDGE_ABOVE = (0.975, 0.995)  # and in the filter's transition to its stop band
SHARP_EDGE_BODY = (0.6, 0.75)  # the band's body, which every filter passes
SHARP_EDGE_DROP_DB = 20.0  # at least this much lower above the edge than below it
# And the band below the edge no more than this under the body: the Chebyshev's own attenuation
# there is 27 dB (white noise). On the calibration's validation files -20 is the largest
# threshold that finds every soxr speech input (-15: 97%; the rest are speech whose top band is
# that much quieter) and no Chebyshev one (-25: 3-5% of them).
SHARP_EDGE_INTACT_DB = -20.0


def has_sharp_band_edge(x: np.ndarray) -> bool:
    """Whether `x`'s long-term spectrum (Welch, Blackman-Harris window: its side lobes, 92 dB
    down, keep the loud low band out of the quiet top bins) is whole up to about 0.95 of its
    Nyquist frequency and falls by at least `SHARP_EDGE_DROP_DB` within the last few per cent:
    the input band a high-quality resampler leaves. Then the band up to the edge is the signal's
    own, neither aliased nor attenuated. False for signals too short (under 256 samples) or
    silent."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 256:
        return False
    frequencies, power = sps.welch(x, fs=2.0, nperseg=min(1024, len(x)), window="blackmanharris")

    def level(band: tuple[float, float]) -> float:
        inside = power[(frequencies >= band[0]) & (frequencies < band[1])]
        return 10.0 * math.log10(max(float(np.mean(inside)), 1e-30))

    below = level(SHARP_EDGE_BELOW)  # silence: every level is the floor, no drop
    return (
        below - level(SHARP_EDGE_ABOVE) >= SHARP_EDGE_DROP_DB
        and below - level(SHARP_EDGE_BODY) >= SHARP_EDGE_INTACT_DB
    )


def crossover(
    below: np.ndarray, above: np.ndarray, rate: int, edge_hz: float, width_hz: float
) -> np.ndarray:
    """`below`'s band under `edge_hz` and `above`'s band over it, joined by a raised-cosine
    crossover `width_hz` wide centred on the edge (equal-length signals at `rate`). The two
    weights sum to 1 at every frequency, so `crossover(x, x, ...)` is `x`; applied to the whole
    signal's DFT, it is a zero-phase filter pair with no seam in time."""
    below, above = np.asarray(below, dtype=np.float64), np.asarray(above, dtype=np.float64)
    if below.shape != above.shape:
        raise ValueError(f"crossover of {below.shape} and {above.shape} samples")
    n = len(below)
    frequencies = np.fft.rfftfreq(n, 1.0 / rate)
    ramp = np.clip((edge_hz - frequencies) / width_hz + 0.5, 0.0, 1.0)
    weight = 0.5 - 0.5 * np.cos(np.pi * ramp)  # 1 under the crossover, 0 over it
    spectrum = weight * np.fft.rfft(below) + (1.0 - weight) * np.fft.rfft(above)
    return np.fft.irfft(spectrum, n).astype(np.float32)


# A band edge inside a file: a recording made at a lower rate and saved at a higher one (an
# 8 kHz phone call or corpus resampled to 16 or 44.1 kHz, a telephone band) holds nothing above
# its old Nyquist frequency. Its long-term spectrum falls by tens of dB within the resampler's
# transition and stays down to the top. On the 97 test files of the shipped model's corpus
# (every third, first 10 s) resampled to 8 kHz and back up with soxr, to 16 or 44.1 kHz, the
# edge is found in every one (at 3812-3937 Hz); through an 8 kHz telephone band filter at
# 3437-3500 Hz; from 11.025 kHz at 4937-5375 Hz. At their own rate 1 of the 97 has such an
# edge (a tabla stroke with nothing above 1.2 kHz).
BAND_EDGE_DROP_DB = 30.0  # the whole band above at least this far under the band just below
BAND_EDGE_WINDOW_HZ = 250.0  # the band just below a candidate edge
BAND_EDGE_TRANSITION_HZ = 400.0  # room for a resampler's transition band above it
BAND_EDGE_STEP_HZ = 62.5  # the bands above are measured this wide; the edge to this step
# The edge: the top of the last band still this far over the floor above it (soxr's band from
# 8 kHz is flat to 3750 Hz and 3 dB down at 3790; the test files show its edge at 3812-3937).
BAND_EDGE_FLOOR_MARGIN_DB = 10.0
BAND_EDGE_LOWEST_HZ = 1000.0
BAND_EDGE_SCAN_HZ = 25.0  # candidate edges this far apart


def band_edge_hz(x: np.ndarray, rate: float, top_hz: float) -> float | None:
    """The frequency (Hz) up to which `x`, sampled at `rate`, holds its band, where the whole
    band above it up to 0.95 x `top_hz` lies at least `BAND_EDGE_DROP_DB` under the band just
    below it: the old Nyquist frequency of a file resampled up from a lower rate. None when no
    such edge lies between `BAND_EDGE_LOWEST_HZ` and 0.85 x `top_hz` (at most `rate` / 2), for
    silence and for signals under 256 samples. The spectrum is Welch's with a Blackman-Harris
    window (side lobes 92 dB down) and 20 Hz resolution or finer; the edge is the top of the last
    `BAND_EDGE_STEP_HZ` band still `BAND_EDGE_FLOOR_MARGIN_DB` over the band above's floor."""
    x = np.asarray(x, dtype=np.float64)
    top_hz = min(top_hz, rate / 2)
    if len(x) < 256 or not np.any(x):
        return None
    segment = min(1 << max(8, math.ceil(math.log2(rate / 20))), len(x))
    frequencies, power = sps.welch(x, fs=rate, nperseg=segment, window="blackmanharris")
    cumulative = np.concatenate([[0.0], np.cumsum(power)])

    def level(low: float, high: float) -> float:
        i, j = np.searchsorted(frequencies, [low, high])
        return 10.0 * math.log10(max((cumulative[j] - cumulative[i]) / max(j - i, 1), 1e-30))

    stop = 0.95 * top_hz
    starts = np.arange(0.0, stop, BAND_EDGE_STEP_HZ)
    levels = np.array([level(s, min(s + BAND_EDGE_STEP_HZ, stop)) for s in starts])
    for candidate in np.arange(BAND_EDGE_LOWEST_HZ, 0.85 * top_hz, BAND_EDGE_SCAN_HZ):
        above = levels[starts >= candidate + BAND_EDGE_TRANSITION_HZ]
        if not above.size:
            break
        floor = above.max()
        below = level(candidate - BAND_EDGE_WINDOW_HZ, candidate)
        if below - floor >= BAND_EDGE_DROP_DB:
            kept = (starts >= candidate - BAND_EDGE_WINDOW_HZ) & (
                starts < candidate + BAND_EDGE_TRANSITION_HZ
            )
            kept &= levels >= floor + BAND_EDGE_FLOOR_MARGIN_DB
            return float(starts[kept].max() + BAND_EDGE_STEP_HZ) if kept.any() else candidate
    return None
