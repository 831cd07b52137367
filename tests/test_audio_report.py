"""The signal report: a real PNG whose numbers follow the theory it illustrates."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from datasets.audio.signal_report import demo_signal, signal_report


def test_report_png_and_numbers(tmp_path: Path) -> None:
    numbers = signal_report(tmp_path / "r.png", bits=(4, 8, 12), ratios=(2, 4))
    image = mpimg.imread(tmp_path / "r.png")
    assert image.ndim == 3
    assert image.shape[0] > 500
    assert image.shape[1] > 700
    assert image[..., :3].std() > 0.05  # something is drawn
    sqnr = [q["sqnr_db"] for q in numbers["quantization"]]
    # About 6 dB per bit: 4 bits more, about 24 dB more.
    assert np.diff(sqnr) == pytest.approx([24.08, 24.08], abs=1.5)
    for row in numbers["sampling"]:
        assert row["snr_soxr_db"] > row["snr_none_db"]  # aliasing costs more than losing the band


def test_report_is_deterministic_and_takes_any_signal(tmp_path: Path) -> None:
    x = demo_signal(8000, 1000)[::-1]
    signal_report(tmp_path / "a.png", x, 8000, bits=(2,), ratios=(2, 3, 4, 6))
    signal_report(tmp_path / "b.png", x, 8000, bits=(2,), ratios=(2, 3, 4, 6))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
