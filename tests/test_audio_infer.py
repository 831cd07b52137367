"""Inference on whole signals: lengths for every ratio, no seams, files of any rate."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_corpus import HR_RATE

from datasets.audio.files import write_wav
from datasets.audio.signals import RATIOS, decimate
from datasets.io import write_json_atomic
from models.audio.bwe import BandwidthExtender
from models.audio.config import preset
from models.audio.infer import (
    budget_level,
    crossfade_window,
    in_bfloat16,
    input_band_hz,
    load_model,
    native_bfloat16,
    run_chunked,
    superresolve,
    superresolve_at_level,
    superresolve_bands,
    superresolve_file,
    superresolve_wide,
)
from models.audio.metrics import snr_db
from models.audio.unet import AudioUNet
from models.checkpoint import save_model

torch.set_num_threads(1)


def busy_model(ratio: int = 4, seed: int = 0) -> AudioUNet:
    """A tiny model whose output is far from its input (a larger last layer than at init), so
    chunking errors would show."""
    model = AudioUNet(
        preset("tiny", ratio=ratio, hr_rate=HR_RATE), torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        model.last.weight.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(seed + 1))
    return model.eval()


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("n_lr", [1, 7, 333, 2049])
def test_output_length_is_input_length_times_ratio(ratio: int, n_lr: int) -> None:
    lr = np.random.default_rng(n_lr).uniform(-0.5, 0.5, n_lr).astype(np.float32)
    out = superresolve(busy_model(ratio), lr, chunk=1024, overlap=128)
    assert out.shape == (n_lr * ratio,)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


def test_the_unet_runs_in_bfloat16_only_on_a_cpu_that_has_it(monkeypatch) -> None:
    cpu = torch.device("cpu")
    spectral = BandwidthExtender(preset("bwe-tiny", ratio=4, hr_rate=HR_RATE))
    assert not in_bfloat16(spectral, cpu)
    assert in_bfloat16(busy_model(), cpu) == native_bfloat16()
    assert not in_bfloat16(busy_model(), torch.device("meta"))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not in_bfloat16(busy_model(), cpu)


@pytest.mark.skipif(not native_bfloat16(), reason="this CPU has no native bfloat16")
def test_bfloat16_output_stays_close_to_float32s(monkeypatch) -> None:
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 20000).astype(np.float32)
    model = busy_model()
    fast = run_chunked(model, x, chunk=4096, overlap=512)
    monkeypatch.setattr("models.audio.infer.in_bfloat16", lambda *_: False)
    exact = run_chunked(model, x, chunk=4096, overlap=512)
    assert not np.array_equal(fast, exact)  # it did run in bfloat16
    assert snr_db(exact, fast) > 30.0


def test_empty_input_gives_empty_output() -> None:
    assert superresolve(busy_model(), np.zeros(0, np.float32)).shape == (0,)


def test_crossfade_weights_are_positive_and_flat_inside() -> None:
    window = crossfade_window(64, 16)
    assert window.min() > 0
    assert np.all(window[16:48] == 1.0)
    # Overlapping ramps of neighbouring chunks sum to one: a constant passes unchanged.
    np.testing.assert_allclose(window[48:] + window[:16], 1.0)


def test_overlap_add_has_no_seams(audio_renders: dict[str, list[Path]]) -> None:
    # Chunked output vs the whole signal in one pass: with overlap the two agree to within
    # -50 dB everywhere, including around every chunk border; butted chunks (no overlap)
    # show the seams this guards against.
    hr, _ = sf.read(str(audio_renders["test"][0]), dtype="float32")
    model = busy_model()
    lr = decimate(hr[: 4 * 8000], 4, "soxr")
    x_full = superresolve(model, lr, chunk=len(lr) * 4 + 64, overlap=0)
    chunk, overlap = 2048, 256
    chunked = superresolve(model, lr, chunk=chunk, overlap=overlap)
    butted = superresolve(model, lr, chunk=chunk, overlap=0)
    assert snr_db(hr[: 4 * 8000], x_full) < 20  # the busy model really changes the signal
    assert snr_db(x_full, chunked) > 50
    assert snr_db(x_full, butted) < snr_db(x_full, chunked) - 10
    borders = np.arange(chunk - overlap, len(x_full), chunk - overlap)
    for border in borders[:-1]:
        around = slice(border - overlap, border + overlap)
        assert snr_db(x_full[around], chunked[around]) > 40


class FIRModel(torch.nn.Module):
    """A fixed symmetric FIR filter as an audio model: linear and time-invariant, so its
    output on a whole signal extended with silence is known exactly."""

    def __init__(self, taps: np.ndarray) -> None:
        super().__init__()
        self.config = preset("tiny", ratio=4, hr_rate=HR_RATE)
        self.taps = torch.nn.Parameter(torch.from_numpy(taps.astype(np.float32))[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv1d(x, self.taps, padding=self.taps.shape[-1] // 2)


def test_chunks_see_silence_beyond_the_signals_ends() -> None:
    """Chunked inference equals the model run on the whole signal with silence before and
    after it, at the ends too: a signal that starts at full level (a struck drum) keeps that
    onset, where a mirrored extension would put a kink there."""
    rng = np.random.default_rng(0)
    half = rng.normal(size=33)
    taps = np.concatenate([half, half[-2::-1]]) / 40  # 65 taps, symmetric
    t = np.arange(12_000) / HR_RATE
    x = (0.9 * np.cos(2 * np.pi * 440 * t) * np.exp(-8 * t)).astype(np.float32)
    expected = np.convolve(x, taps, mode="same")
    out = run_chunked(FIRModel(taps), x, chunk=1024, overlap=128)
    assert snr_db(expected, out) > 40
    assert snr_db(expected[:64], out[:64]) > 40
    assert snr_db(expected[-64:], out[-64:]) > 40


def test_run_chunked_refuses_an_overlap_of_half_the_chunk() -> None:
    with pytest.raises(ValueError, match="overlap 512 must be less than half the chunk 1024"):
        run_chunked(busy_model(), np.zeros(5000, np.float32), chunk=1024, overlap=512)


def write_run(run_dir: Path, model: AudioUNet | BandwidthExtender) -> Path:
    save_model(run_dir, model, model.config)
    write_json_atomic(run_dir / "train.json", {"config": {}, "pairs": {}})
    return run_dir


def test_saved_model_round_trips(tmp_path: Path) -> None:
    model = busy_model()
    loaded = load_model(write_run(tmp_path / "run", model), device="cpu")
    assert not loaded.training
    assert next(loaded.parameters()).device.type == "cpu"
    x = torch.randn(1, 1, 256)
    assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("file_rate", [44100, HR_RATE, HR_RATE // 4, 11025, 3000])
def test_superresolve_file_at_any_rate(
    tmp_path: Path,
    audio_renders: dict[str, list[Path]],
    file_rate: int,
) -> None:
    import soxr

    hr, _ = sf.read(str(audio_renders["test"][0]), dtype="float32")
    source = tmp_path / f"in-{file_rate}.wav"
    write_wav(source, soxr.resample(hr[:40000], HR_RATE, file_rate), file_rate)
    run_dir = write_run(tmp_path / "run", busy_model())
    result = superresolve_file(run_dir, source, tmp_path / "out" / "sr.wav")
    out, rate = sf.read(result["output"], dtype="float32")
    lr_len = round(sf.info(str(source)).frames * (HR_RATE / 4) / file_rate)
    assert rate == HR_RATE
    assert abs(len(out) - 4 * lr_len) <= 4
    assert result["input_band_hz"] == min(file_rate, HR_RATE) / 2
    if HR_RATE / 4 < file_rate < HR_RATE:
        assert result["kept_input_band_hz"] == file_rate / 2
    else:
        assert len(out) % 4 == 0
        assert "kept_input_band_hz" not in result
    png = Path(result["png"])
    assert png == tmp_path / "out" / "sr.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if file_rate >= HR_RATE:
        assert set(result["metrics"]) == {"model", "spline", "sinc"}
        assert set(result["metrics"]["sinc"]) == {"snr_db", "lsd", "lsd_hf"}
    else:
        assert "metrics" not in result


def test_unreadable_input_names_the_file(tmp_path: Path) -> None:
    from datasets.io import RejectedInput

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    run_dir = write_run(tmp_path / "run", busy_model())
    with pytest.raises(RejectedInput, match=r"bad\.wav"):
        superresolve_file(run_dir, bad, tmp_path / "out.wav")


def test_a_high_band_gain_replaces_the_spectral_models_level_for_one_file(
    tmp_path: Path, audio_renders: dict[str, list[Path]]
) -> None:
    config = preset("bwe-tiny", patch=2048, hr_rate=HR_RATE, high_band_gain=0.5)
    model = BandwidthExtender(config, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.amp_out.bias.fill_(2.0)  # a loud painted band, so its level shows
    run_dir = write_run(tmp_path / "run", model)
    source = audio_renders["test"][0]

    def high_band_energy(gain: float | None) -> float:
        result = superresolve_file(run_dir, source, tmp_path / f"{gain}.wav", None, gain)
        assert result["high_band_gain"] == (0.5 if gain is None else gain)
        out, _ = sf.read(result["output"], dtype="float64")
        spectrum = np.abs(np.fft.rfft(out)) ** 2
        return float(spectrum[len(spectrum) * 5 // 8 :].sum())  # above 5 kHz at 16 kHz

    calibrated, trained = high_band_energy(None), high_band_energy(1.0)
    assert trained == pytest.approx(4 * calibrated, rel=0.05)
    assert high_band_energy(0.0) < 1e-3 * trained
    with pytest.raises(ValueError, match=r"run.*spectral model.*only"):
        superresolve_file(
            write_run(tmp_path / "run", busy_model()), source, tmp_path / "u.wav", None, 1.0
        )


def band_snr_db(
    reference: np.ndarray, estimate: np.ndarray, low_hz: float, high_hz: float
) -> float:
    """The SNR of `estimate` in the band [low_hz, high_hz) at HR_RATE."""
    frequencies = np.fft.rfftfreq(len(reference), 1 / HR_RATE)
    band = (frequencies >= low_hz) & (frequencies < high_hz)
    ref, est = np.fft.rfft(reference)[band], np.fft.rfft(estimate)[band]
    return float(10 * np.log10(np.sum(np.abs(ref) ** 2) / np.sum(np.abs(ref - est) ** 2)))


def test_a_wide_input_keeps_its_own_band_and_the_model_paints_above_it(
    tmp_path: Path, audio_renders: dict[str, list[Path]]
) -> None:
    """An 8 kHz file to a 4 -> 16 kHz model: up to its Nyquist frequency the output is the file
    (resampled), not the model's guess from the band under 2 kHz; above it, the model's."""
    import soxr

    hr, _ = sf.read(str(audio_renders["test"][0]), dtype="float32")
    hr = hr[:32000]
    wide = soxr.resample(hr, HR_RATE, HR_RATE // 2, "HQ")
    model = busy_model()
    estimate = superresolve_wide(model, wide, HR_RATE // 2)
    assert len(estimate) == len(hr)
    own = soxr.resample(wide, HR_RATE // 2, HR_RATE, "HQ")[: len(hr)]
    assert band_snr_db(own, estimate, 0.0, 3700.0) > 60
    from_low_rate = superresolve(model, soxr.resample(wide, HR_RATE // 2, HR_RATE // 4, "HQ"))
    assert band_snr_db(from_low_rate[: len(hr)], estimate, 4100.0, 8000.0) > 60
    # The file's band makes it far closer to the truth than the model's guess alone.
    assert (
        band_snr_db(hr, estimate, 2000.0, 3700.0)
        > band_snr_db(hr, from_low_rate, 2000.0, 3700.0) + 20
    )
    for rate in (HR_RATE // 4, HR_RATE):
        with pytest.raises(ValueError, match=r"band ends between 2000\.0 and 8000\.0 Hz"):
            superresolve_wide(model, wide, rate)


@pytest.mark.parametrize("container_rate", [HR_RATE, 44100])
def test_a_file_resampled_up_from_8khz_keeps_its_band_like_an_8khz_file(
    tmp_path: Path, audio_renders: dict[str, list[Path]], container_rate: int
) -> None:
    """An 8 kHz recording saved at 16 or 44.1 kHz holds nothing above 4 kHz. Taken for a
    reference it would lose its 2-4 kHz band to the model's guess; its band edge routes it
    like the 8 kHz file itself, and with no whole band there is nothing to score it against."""
    import soxr

    hr, _ = sf.read(str(audio_renders["test"][0]), dtype="float32")
    eight = soxr.resample(hr[:32000], HR_RATE, HR_RATE // 2, "HQ")
    container = tmp_path / f"in-{container_rate}.wav"
    write_wav(container, soxr.resample(eight, HR_RATE // 2, container_rate, "HQ"), container_rate)
    direct = tmp_path / "in-8000.wav"
    write_wav(direct, eight, HR_RATE // 2)
    run_dir = write_run(tmp_path / "run", busy_model())
    result = superresolve_file(run_dir, container, tmp_path / "out.wav")
    # soxr's edge from 8 kHz lies just under 4 kHz: a common rate's Nyquist frequency.
    assert result["kept_input_band_hz"] == HR_RATE / 4
    assert result["input_band_hz"] == result["kept_input_band_hz"]
    assert "metrics" not in result
    from_container, _ = sf.read(result["output"], dtype="float32")
    expected, _ = sf.read(superresolve_file(run_dir, direct, tmp_path / "8k.wav")["output"])
    n = min(len(from_container), len(expected))
    assert band_snr_db(expected[:n], from_container[:n], 0.0, 3500.0) > 40


def test_a_file_resampled_up_from_the_model_rate_is_not_a_reference(
    tmp_path: Path, audio_renders: dict[str, list[Path]]
) -> None:
    import soxr

    hr, _ = sf.read(str(audio_renders["test"][0]), dtype="float32")
    low = soxr.resample(hr[:32000], HR_RATE, HR_RATE // 4, "HQ")
    container = tmp_path / "in.wav"
    write_wav(container, soxr.resample(low, HR_RATE // 4, HR_RATE, "HQ"), HR_RATE)
    result = superresolve_file(
        write_run(tmp_path / "run", busy_model()), container, tmp_path / "o.wav"
    )
    assert result["input_band_hz"] == HR_RATE / 8
    assert "kept_input_band_hz" not in result
    assert "metrics" not in result


def test_a_wide_input_runs_the_spectral_model_at_its_own_level(tmp_path: Path) -> None:
    config = preset("bwe-tiny", patch=2048, hr_rate=HR_RATE, high_band_gain=0.5)
    model = BandwidthExtender(config, torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        model.amp_out.bias.fill_(2.0)  # a loud painted band, so its level shows
    # Noise that fades in and out: a signal cut off at its ends would put a click's broadband
    # energy above 5 kHz whatever the level.
    noise = np.random.default_rng(0).standard_normal(8000) * np.hanning(8000)
    wide = (0.1 * noise).astype(np.float32)

    def high_band_energy(wide_input_gain: float | None) -> float:
        model.config = dataclasses.replace(config, wide_input_gain=wide_input_gain)
        out = superresolve_wide(model, wide, HR_RATE // 2)
        assert model.config.wide_input_gain == wide_input_gain  # restored
        spectrum = np.abs(np.fft.rfft(out)) ** 2
        return float(spectrum[len(spectrum) * 5 // 8 :].sum())  # above 5 kHz

    assert high_band_energy(0.25) == pytest.approx(high_band_energy(None) / 4, rel=0.05)
    with pytest.raises(ValueError, match="wide_input_gain is an amplitude factor"):
        dataclasses.replace(config, wide_input_gain=1.5)


def test_a_budget_gives_each_input_the_level_whose_painted_energy_it_allows() -> None:
    """`high_band_budget`: the painted band's energy is the budget times the correction's (the
    output below 2 kHz minus the spline input), capped at the trained level."""
    config = preset("bwe-tiny", patch=2048, hr_rate=HR_RATE, high_band_gain=0.5)
    model = BandwidthExtender(config, torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        model.amp_out.bias.fill_(2.0)  # a loud painted band: the budget must turn it down
    noise = np.random.default_rng(0).standard_normal(4000) * np.hanning(4000)
    lr = (0.1 * noise).astype(np.float32)
    x, below, above = superresolve_bands(model, lr)
    correction = float(np.sum((below.astype(np.float64) - x) ** 2))
    painted = float(np.sum(above.astype(np.float64) ** 2))
    assert painted > 0
    assert correction > 0
    for budget in (0.02, 0.2):  # both under 1's level here
        model.config = dataclasses.replace(config, high_band_budget=budget)
        estimate, level = superresolve_at_level(model, lr)
        assert level == pytest.approx(math.sqrt(budget * correction / painted))
        assert level < 1.0
        np.testing.assert_allclose(estimate, below + np.float32(level) * above, atol=1e-6)
        assert float(np.sum((level * above) ** 2)) == pytest.approx(budget * correction, rel=1e-4)
    model.config = dataclasses.replace(config, high_band_budget=1e6)
    assert superresolve_at_level(model, lr)[1] == 1.0  # never above the trained level
    # No budget: the one level; nothing painted: 1; the U-Net: none.
    model.config = config
    assert superresolve_at_level(model, lr)[1] == 0.5
    assert budget_level(x, below, np.zeros_like(above), 0.5) == 1.0
    assert superresolve_at_level(busy_model(), lr)[1] is None


def test_a_level_given_for_one_file_overrides_the_budget(
    tmp_path: Path, audio_renders: dict[str, list[Path]]
) -> None:
    config = preset("bwe-tiny", patch=2048, hr_rate=HR_RATE, high_band_budget=0.5)
    model = BandwidthExtender(config, torch.Generator().manual_seed(0))
    run_dir = write_run(tmp_path / "run", model)
    source = audio_renders["test"][0]
    budgeted = superresolve_file(run_dir, source, tmp_path / "b.wav")
    assert 0.0 <= budgeted["high_band_gain"] <= 1.0
    assert (
        superresolve_file(run_dir, source, tmp_path / "g.wav", None, 0.7)["high_band_gain"] == 0.7
    )


def test_a_band_edge_away_from_a_common_rate_is_kept_where_it_is() -> None:
    """A telephone band (an elliptic filter at 3.4 kHz in an 8 kHz file, saved at 16 kHz) ends
    where the filter ends it; the edge soxr leaves from 11.025 kHz is that rate's Nyquist."""
    import soxr
    from scipy import signal as sps

    noise = np.random.default_rng(0).standard_normal(4 * HR_RATE)
    eight = soxr.resample(noise, HR_RATE, 8000)
    phone = sps.sosfiltfilt(sps.ellip(8, 0.5, 60, 3400, fs=8000, output="sos"), eight)
    config = busy_model().config
    assert 3300 <= input_band_hz(soxr.resample(phone, 8000, HR_RATE), HR_RATE, config) <= 3600
    eleven = soxr.resample(soxr.resample(noise, HR_RATE, 11025), 11025, 44100)
    assert input_band_hz(eleven, 44100, config) == 11025 / 2
    assert input_band_hz(noise, HR_RATE, config) == HR_RATE / 2
