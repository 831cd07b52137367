"""The lecture's first half as one picture: a signal at several bit depths and sample rates.

Row 1, quantization: the signal through the SAR quantizer at a few bit depths, the error, and
the measured SQNR beside the 6.02 N + 1.76 dB rule. Row 2, sampling: the signal decimated
with and without an anti-aliasing filter and rebuilt by band-limited projection (`sinc`),
with the reconstruction error. Row 3, the spectra that explain row 2: what folds back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf
from matplotlib.figure import Figure  # no pyplot: no global state, safe on worker threads

from datasets.audio.signals import (
    decimate,
    sar_quantize,
    sinc_upsample,
    sqnr_db,
    sqnr_theory_db,
)
from datasets.io import atomic_path


def demo_signal(sample_rate: int = 16000, n: int = 4096) -> np.ndarray:
    """A 440 Hz tone with decaying harmonics up to 7 kHz: content above low Nyquist rates."""
    t = np.arange(n) / sample_rate
    harmonics = range(1, (7000 // 440) + 1)
    x = sum(np.sin(2 * np.pi * 440 * k * t + k) / k for k in harmonics)
    return (0.9 * x / np.max(np.abs(x))).astype(np.float32)


def report_excerpt(
    data_dir: str | os.PathLike[str], excerpt: int = 4096
) -> tuple[np.ndarray | None, str]:
    """`excerpt` samples from the middle of the first accepted file (by id) and its file_id,
    so the report shows the corpus itself; (None, "demo tone") when the dataset has no file,
    and the report draws `demo_signal` instead."""
    files_path = Path(data_dir) / "audio" / "files.parquet"
    files = pq.read_table(files_path).to_pylist() if files_path.exists() else []
    if not files:
        return None, "demo tone"
    first = min(files, key=lambda row: row["file_id"])
    wav = str(Path(data_dir) / first["hr_path"])
    start = max(0, sf.info(wav).frames // 2 - excerpt // 2)
    signal, _ = sf.read(wav, start=start, frames=excerpt, dtype="float32")
    return np.asarray(signal, dtype=np.float32), first["file_id"]


def _spectrum_db(x: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    window = np.hanning(len(x))
    magnitude = np.abs(np.fft.rfft(x * window)) / (window.sum() / 2)
    return np.fft.rfftfreq(len(x), 1 / rate), 20 * np.log10(np.maximum(magnitude, 1e-8))


def signal_report(
    out_png: str | os.PathLike[str],
    signal: np.ndarray | None = None,
    sample_rate: int = 16000,
    bits: Sequence[int] = (3, 6, 10),
    ratios: Sequence[int] = (2, 4, 8),
    title: str = "",
) -> dict[str, Any]:
    """Draw the report to `out_png` (atomically) and return the numbers it shows."""
    x = demo_signal(sample_rate) if signal is None else np.asarray(signal, dtype=np.float32)
    shown = slice(0, min(len(x), int(0.01 * sample_rate)))  # 10 ms is enough to see steps
    t_ms = np.arange(len(x))[shown] * 1000 / sample_rate
    columns = max(len(bits), len(ratios))
    fig = Figure(figsize=(4.2 * columns, 9.5))
    axes = fig.subplots(3, columns, squeeze=False)
    numbers: dict[str, Any] = {"quantization": [], "sampling": []}

    for col, n_bits in enumerate(bits):
        q = sar_quantize(x, n_bits)
        measured = sqnr_db(x, q)
        numbers["quantization"].append(
            {"bits": n_bits, "sqnr_db": measured, "theory_db": sqnr_theory_db(n_bits)}
        )
        ax = axes[0, col]
        ax.plot(t_ms, x[shown], color="0.6", lw=1, label="signal")
        ax.step(t_ms, q[shown], where="mid", color="C0", lw=1, label=f"{n_bits}-bit SAR")
        ax.plot(t_ms, (x - q)[shown], color="C3", lw=0.8, label="error")
        ax.set_title(
            f"{n_bits} bits: SQNR {measured:.1f} dB (6.02N+1.76 = {sqnr_theory_db(n_bits):.1f})",
            fontsize=9,
        )
        ax.set_xlabel("ms")
        ax.legend(fontsize=7, loc="upper right")

    freqs, spectrum = _spectrum_db(x, sample_rate)
    for col, ratio in enumerate(ratios):
        low_rate = sample_rate / ratio
        ax, spec_ax = axes[1, col], axes[2, col]
        spec_ax.plot(freqs, spectrum, color="0.6", lw=0.8, label=f"signal @ {sample_rate} Hz")
        row: dict[str, Any] = {"ratio": ratio, "lr_rate": low_rate}
        ax.plot(t_ms, x[shown], color="0.6", lw=1, label="signal")
        for color, name in (("C1", "none"), ("C2", "soxr")):
            lr = decimate(x, ratio, name)
            rebuilt = sinc_upsample(lr, ratio, len(x))
            row[f"snr_{name}_db"] = sqnr_db(x, rebuilt)
            ax.plot(t_ms, rebuilt[shown], color=color, lw=1, label=f"{name}: sinc rebuild")
            ax.plot(t_ms, (x - rebuilt)[shown], color=color, lw=0.6, ls=":")
            f_lr, s_lr = _spectrum_db(lr, low_rate)
            label = "aliased x[::r]" if name == "none" else "soxr anti-aliased"
            spec_ax.plot(f_lr, s_lr, color=color, lw=0.9, label=label)
        numbers["sampling"].append(row)
        ax.set_title(
            f"{low_rate:.0f} Hz (1/{ratio}): SNR none {row['snr_none_db']:.1f} dB, "
            f"soxr {row['snr_soxr_db']:.1f} dB",
            fontsize=9,
        )
        ax.set_xlabel("ms (dotted: error)")
        ax.legend(fontsize=7, loc="upper right")
        spec_ax.axvline(low_rate / 2, color="k", lw=0.6, ls="--")
        spec_ax.set_xlim(0, sample_rate / 2)
        spec_ax.set_ylim(-120, 5)
        spec_ax.set_xlabel("Hz (dashed: new Nyquist)")
        spec_ax.set_ylabel("dB")
        spec_ax.legend(fontsize=7, loc="upper right")
    for row_axes, n_used in ((axes[0], len(bits)), (axes[1], len(ratios)), (axes[2], len(ratios))):
        for ax in row_axes[n_used:]:
            ax.set_axis_off()
    fig.suptitle(title or "Quantization, sampling, aliasing and reconstruction", fontsize=11)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=90, metadata={"Software": None})
    return numbers
