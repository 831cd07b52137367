"""Super-resolve a signal of any length with a trained audio model (the U-Net, the spectral
bandwidth extender, or the two gated: `build_model` makes any from its config).

The whole low-res signal is spline-interpolated to the high rate once (so the model's input has
no seams), then the model runs over overlapping chunks whose outputs are cross-faded with
raised-cosine ramps (overlap-add normalised by the summed weights). The overlap is wider than
the edge zone where a chunk's output depends on its zero padding, so the cross-fade only ever
mixes two nearly identical signals and no seam is audible. Output length = input length x ratio.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
from matplotlib.figure import Figure

from datasets.audio.files import load_audio, write_wav
from datasets.audio.signals import band_edge_hz, crossover, sinc_upsample, spline_upsample
from datasets.io import atomic_path
from models.audio.bwe import BandwidthExtender
from models.audio.config import AudioModelConfig, BWEConfig, GatedConfig, model_config_class
from models.audio.gated import GatedExtender, mix, spans
from models.audio.metrics import evaluate_pair, log_power_spectrogram
from models.audio.unet import AudioUNet
from models.checkpoint import CONFIG_FILE, load_config, load_weights, pick_device

DEFAULT_CHUNK = 16384
DEFAULT_OVERLAP = 2048


AudioModel = AudioUNet | BandwidthExtender | GatedExtender


def build_model(config: AudioModelConfig, generator: torch.Generator | None = None) -> AudioModel:
    """The untrained network a config describes."""
    if isinstance(config, GatedConfig):
        return GatedExtender(config, generator)
    if isinstance(config, BWEConfig):
        return BandwidthExtender(config, generator)
    return AudioUNet(config, generator)


def load_model_config(directory: str | Path) -> AudioModelConfig:
    """The config of the audio model in `directory`, of whichever architecture it is (errors
    about the file come from `load_config`, naming it)."""
    try:
        raw = json.loads((Path(directory) / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        raw = {}
    return load_config(directory, model_config_class(raw if isinstance(raw, dict) else {}))


def load_model(run_dir: str | Path, device: str | None = None) -> AudioModel:
    """A trained model from a checkpoint directory, in eval mode, on `device` (default: the GPU
    when there is one; the paper-size model is minutes per file on a CPU)."""
    config = load_model_config(run_dir)
    model = load_weights(run_dir, build_model(config))
    return model.to(device or pick_device()).eval()


@torch.inference_mode()
def predict_patches(model: AudioModel, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    """The model's output for a stack of (B, patch) inputs, in eval mode, batch by batch."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = [
        model(torch.from_numpy(inputs[i : i + batch, None, :]).to(device)).squeeze(1).cpu()
        for i in range(0, len(inputs), batch)
    ]
    model.train(was_training)
    return torch.cat(outputs).numpy()


def native_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX); without it, a
    bfloat16 convolution is emulated and slower than float32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def in_bfloat16(model: AudioModel, device: torch.device) -> bool:
    """Whether `run_chunked` runs `model` under bfloat16 autocast: the U-Net on a CPU that
    computes bfloat16 natively, where it runs twice as fast (55x against 28x real time for the
    `narrow` preset on one core) and its output stays within -54 dB of float32's, far under its
    error (docs/BENCHMARKS.md). The spectral model stays in float32: its STFT needs it."""
    return isinstance(model, AudioUNet) and device.type == "cpu" and native_bfloat16()


def crossfade_window(length: int, overlap: int) -> np.ndarray:
    """Ones with raised-cosine ramps of `overlap` samples at both ends (never exactly zero)."""
    window = np.ones(length, dtype=np.float64)
    if overlap:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        window[:overlap] = ramp
        window[-overlap:] = ramp[::-1]
    return window


@torch.inference_mode()
def run_chunked(
    model: AudioModel,
    x: np.ndarray,
    chunk: int = DEFAULT_CHUNK,
    overlap: int = DEFAULT_OVERLAP,
    batch: int = 4,
    bands: bool = False,
) -> np.ndarray:
    """Apply `model` to the interpolated signal `x` (any length) by overlap-add of chunks;
    with `bands`, the spectral model's two bands (`BandwidthExtender.bands`), shape (2, n).

    `chunk` is rounded up to the model's length multiple. The signal is extended by `overlap`
    samples of silence at both ends, so its first and last samples sit in a chunk's flat
    middle. Silence, not a mirror image: a recording is silent beyond its ends, as its
    reference is, while a mirrored onset (a struck drum at full level in the first sample) is a
    kink the model answers with a burst of high band: on the held-out tabla samples that burst
    cost the shipped model 13 dB of SNR.
    """
    multiple = model.config.multiple
    chunk = math.ceil(chunk / multiple) * multiple
    if not 0 <= 2 * overlap < chunk:
        raise ValueError(f"overlap {overlap} must be less than half the chunk {chunk}")
    n = len(x)
    channels = 2 if bands else 1
    if n == 0:
        return np.zeros((channels, 0) if bands else 0, dtype=np.float32)
    hop = chunk - overlap
    padded_len = overlap + n + overlap
    n_chunks = max(1, math.ceil((padded_len - overlap) / hop))
    total = (n_chunks - 1) * hop + chunk
    signal = np.zeros(total, dtype=np.float32)
    signal[overlap : overlap + n] = x
    window = crossfade_window(chunk, overlap)
    out = np.zeros((channels, total), dtype=np.float64)
    weight = np.zeros(total, dtype=np.float64)
    device = next(model.parameters()).device
    run = model.bands if bands else model
    starts = [i * hop for i in range(n_chunks)]
    for first in range(0, n_chunks, batch):
        group = starts[first : first + batch]
        stacked = np.stack([signal[s : s + chunk] for s in group])[:, None, :]
        with torch.autocast("cpu", torch.bfloat16, enabled=in_bfloat16(model, device)):
            y = run(torch.from_numpy(stacked).to(device)).double().cpu().numpy()
        for start, piece in zip(group, y, strict=True):
            out[:, start : start + chunk] += piece * window
            weight[start : start + chunk] += window
    result = (out / weight)[:, overlap : overlap + n].astype(np.float32)
    return result if bands else result[0]


def superresolve(
    model: AudioModel, lr: np.ndarray, chunk: int = DEFAULT_CHUNK, overlap: int = DEFAULT_OVERLAP
) -> np.ndarray:
    """The model's high-rate estimate of a low-rate signal: len(lr) x ratio samples. The
    spectral model runs at its settings for this input (`BWEConfig.for_input`), judged on the
    whole signal so every chunk of it gets the same."""
    return superresolve_at_level(model, lr, chunk, overlap)[0]


@contextmanager
def running_at(model: AudioModel, config: AudioModelConfig) -> Iterator[AudioModel]:
    """`model` with `config` for the block's duration (settings for one input), then its own."""
    own = model.config
    model.config = config
    try:
        yield model
    finally:
        model.config = own


def superresolve_at_level(
    model: AudioModel, lr: np.ndarray, chunk: int = DEFAULT_CHUNK, overlap: int = DEFAULT_OVERLAP
) -> tuple[np.ndarray, float | None]:
    """`superresolve`, and the level the spectral model painted the band above the input's
    Nyquist frequency at: `high_band_gain`, or with `high_band_budget` the input's own
    (`budget_level`, from both bands of the whole signal); None for the U-Net; the gated
    model's spectral one's."""
    config = model.config
    if isinstance(model, GatedExtender):
        return superresolve_gated(model, lr, chunk, overlap)
    if not isinstance(config, BWEConfig):
        x = spline_upsample(lr, config.ratio, len(lr) * config.ratio)
        return run_chunked(model, x, chunk=chunk, overlap=overlap), None
    if config.high_band_budget is None:
        x = spline_upsample(lr, config.ratio, len(lr) * config.ratio)
        with running_at(model, config.for_input(lr)):
            return run_chunked(model, x, chunk=chunk, overlap=overlap), config.high_band_gain
    x, below, above = superresolve_bands(model, lr, chunk, overlap)
    level = budget_level(x, below, above, config.high_band_budget)
    return (below + np.float32(level) * above).astype(np.float32), level


def superresolve_gated(
    model: GatedExtender,
    lr: np.ndarray,
    chunk: int = DEFAULT_CHUNK,
    overlap: int = DEFAULT_OVERLAP,
) -> tuple[np.ndarray, float | None]:
    """The gated model's estimate (`models.audio.gated`) and the level its spectral model
    painted at (a length-weighted mean over the stretches it ran on; None where it ran on
    none). Each network runs only on the stretches where its output has a share, each with
    `overlap` samples of the input on both sides, so what is kept of it never sees the
    silence a chunk is padded with; the spectral model's settings and level are per stretch."""
    config = model.config
    ratio = config.ratio
    x = spline_upsample(lr, ratio, len(lr) * ratio)
    w = model.weights(x)
    spectral = np.zeros(len(x), dtype=np.float32)
    levels = []
    for start, stop in spans(w < 1.0, overlap, ratio):
        part, level = superresolve_at_level(model.spectral, lr[start // ratio : stop // ratio])
        spectral[start:stop] = part
        levels.append((level, stop - start))
    unet = np.zeros(len(x), dtype=np.float32)
    for start, stop in spans(w > 0.0, overlap):
        unet[start:stop] = run_chunked(model.unet, x[start:stop], chunk, overlap)
    level = None
    if levels:
        level = float(sum(lv * n for lv, n in levels) / sum(n for _, n in levels))
    return mix(spectral, unet, w), level


def painter(model: AudioModel) -> AudioModel:
    """The network that paints the band above the input's Nyquist frequency at a level: the
    gated model's spectral one, else the model itself."""
    return model.spectral if isinstance(model, GatedExtender) else model


def superresolve_bands(
    model: BandwidthExtender,
    lr: np.ndarray,
    chunk: int = DEFAULT_CHUNK,
    overlap: int = DEFAULT_OVERLAP,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The spline input and the spectral model's two bands for a low-rate signal (each
    len(lr) x ratio samples, at its settings for this input): the output up to the input's
    Nyquist frequency, and the band above it at the trained level."""
    config = model.config
    x = spline_upsample(lr, config.ratio, len(lr) * config.ratio)
    with running_at(model, config.for_input(lr)):
        below, above = run_chunked(model, x, chunk=chunk, overlap=overlap, bands=True)
    return x, below, above


def budget_level(x: np.ndarray, below: np.ndarray, above: np.ndarray, budget: float) -> float:
    """The largest level, at most 1, at which the painted band `above` (at the trained level)
    holds at most `budget` times the energy of `below - x`: how far the output under the
    input's Nyquist frequency moved from the spline input `x` (`BWEConfig.high_band_budget`).
    An input with nothing painted gets 1 (there is nothing to scale)."""
    painted = float(np.sum(np.square(above, dtype=np.float64)))
    if painted == 0.0:
        return 1.0
    correction = float(np.sum(np.square(below.astype(np.float64) - x)))
    return min(1.0, math.sqrt(budget * correction / painted))


# The crossover from a wide input's own band to the model's, ending at the input's Nyquist
# frequency: on validation files at 8 kHz made with each training filter, a crossover there had
# the best SNR against ones ending at 0.8-0.95 of it (docs/AUDIO_MODEL.md, Inference).
WIDE_CROSSOVER_HZ = 200.0
# Wide inputs are calibrated and scored at the output rate over this (8 kHz at 16 kHz).
WIDE_RATIO = 2


def superresolve_wide(
    model: AudioModel, audio: np.ndarray, rate: int, band_hz: float | None = None
) -> np.ndarray:
    """The high-rate estimate of a signal at `rate` holding its band up to `band_hz` (default
    its Nyquist frequency), between the model's input Nyquist frequency and its output's (an 8
    kHz file to a 4 -> 16 kHz model, or a file resampled up from one: `input_band_hz`): its own
    band up to there, resampled (soxr), and above it the model's estimate from the signal taken
    down to the model's input rate, at `BWEConfig.wide_input_gain`. The model alone would
    replace the signal's measured band between the two Nyquist frequencies with a guess: on the
    held-out test files at 8 kHz that cost 6.4 dB of SNR on speech and 14.6 dB on music against
    simply resampling them. The gated model's spectral model alone fills the band."""
    if isinstance(model, GatedExtender):  # its U-Net knows only inputs at its input rate
        return superresolve_wide(model.spectral, audio, rate, band_hz)
    config = model.config
    low, high = low_rate(config), config.hr_rate
    band_hz = rate / 2 if band_hz is None else band_hz
    if not low / 2 < band_hz < high / 2 or band_hz > rate / 2:
        raise ValueError(
            f"a wide input's band ends between {low / 2} and {high / 2} Hz, within its "
            f"Nyquist frequency; not {band_hz} Hz at {rate} Hz"
        )
    audio = np.asarray(audio, dtype=np.float32)
    n = round(len(audio) * high / rate)
    lr = soxr.resample(audio, rate, low, "HQ")
    wide_config = config.for_wide_input() if isinstance(config, BWEConfig) else config
    with running_at(model, wide_config):
        estimate = fit_length(superresolve(model, lr), n)
    own = fit_length(audio if rate == high else soxr.resample(audio, rate, high, "HQ"), n)
    edge = band_hz - WIDE_CROSSOVER_HZ / 2
    return crossover(own, estimate, high, edge, WIDE_CROSSOVER_HZ)


# A band edge found this little above the model's input Nyquist frequency is that frequency:
# a file resampled up from the model's own input rate (soxr leaves it at 0.97-1 of it).
EDGE_AT_INPUT_NYQUIST = 1.1
# Rates files are commonly made at. An edge just under one's Nyquist frequency (a resampler's
# transition: soxr's from 8 kHz shows at 3812-3937 Hz) is a file resampled up from that rate:
# its band is kept up to that frequency, as the file at that rate would keep it. On 8 kHz test
# files saved at 44.1 kHz, the crossover ending at the edge found instead cost 0.1-0.9 dB.
COMMON_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000)
SNAP_TO_NYQUIST = 0.93  # an edge at this share of a common rate's Nyquist frequency or above


def input_band_hz(audio: np.ndarray, rate: int, config: AudioModelConfig) -> float:
    """How far up (Hz, at most the model's output Nyquist frequency) a signal at `rate` holds
    its band: its Nyquist frequency, or lower, the edge `band_edge_hz` finds in it (a file
    resampled up from a lower rate); an edge within `EDGE_AT_INPUT_NYQUIST` of the model's
    input Nyquist frequency counts as that frequency, one just under a common rate's
    (`COMMON_RATES`, `SNAP_TO_NYQUIST`) as that one."""
    top = min(rate, config.hr_rate) / 2
    edge = band_edge_hz(audio, rate, top)
    low_nyquist = low_rate(config) / 2
    if edge is None:
        return top
    if edge <= EDGE_AT_INPUT_NYQUIST * low_nyquist:
        return min(low_nyquist, top)
    nyquists = [r / 2 for r in COMMON_RATES if SNAP_TO_NYQUIST * r / 2 <= edge <= r / 2]
    return min(nyquists[0], top) if nyquists else edge


def keeps_own_band(band_hz: float, config: AudioModelConfig) -> bool:
    """Whether an input holding its band up to `band_hz` keeps it (`superresolve_wide`): above
    the model's input Nyquist frequency and under its output's."""
    return low_rate(config) / 2 < band_hz < config.hr_rate / 2


def superresolve_audio(
    model: AudioModel, audio: np.ndarray, rate: int, lr: np.ndarray | None = None
) -> tuple[np.ndarray, float, float | None]:
    """A signal at any `rate` super-resolved as its band asks (`input_band_hz`): one that
    holds a band the model's input rate cannot (an 8 kHz file, or one resampled up from it)
    keeps it (`superresolve_wide`); any other is taken to the model's input rate (`lr` when
    given: that signal read there) and super-resolved. Returns the estimate at hr_rate, the
    input's band (Hz) and the level the band above it was painted at (None for the U-Net)."""
    config = model.config
    if rate > config.hr_rate:  # a resampler's edge at the output rate lies above any that matters
        audio, rate = soxr.resample(audio, rate, config.hr_rate, "HQ"), config.hr_rate
    band = input_band_hz(audio, rate, config)
    if keeps_own_band(band, config):
        painting = painter(model).config
        level = (
            painting.for_wide_input().high_band_gain if isinstance(painting, BWEConfig) else None
        )
        return superresolve_wide(model, audio, rate, band), band, level
    if lr is None:
        lr = soxr.resample(audio, rate, low_rate(config), "HQ")
    estimate, level = superresolve_at_level(model, lr)
    return estimate, band, level


def spectrogram_png(
    path: str | Path,
    lr: np.ndarray,
    estimate: np.ndarray,
    hr_rate: int,
    ratio: int,
    reference: np.ndarray | None = None,
    title: str = "",
    input_rate: float | None = None,
) -> Path:
    """Low-res input (at `input_rate`, default the model's input rate), model output and (when
    there is one) the high-res reference side by side, on the same frequency axis
    (0 .. hr_rate / 2) and colour scale."""
    panels = [("low-res input", lr, input_rate or hr_rate / ratio), ("model", estimate, hr_rate)]
    if reference is not None:
        panels.append(("high-res reference", reference, hr_rate))
    # The object-oriented Figure needs no pyplot backend and keeps no global figure state.
    fig = Figure(figsize=(5 * len(panels), 4))
    axes = fig.subplots(1, len(panels), sharey=True)
    for ax, (name, signal, rate) in zip(axes, panels, strict=True):
        # The same window duration at every rate (so the same resolution in Hz and seconds);
        # a tone's power grows with the window length squared, hence the level correction.
        n_fft = 2 * round(1024 * rate / hr_rate)
        level = 20.0 * np.log10(2048 / n_fft)
        spec = 10.0 * log_power_spectrogram(signal, n_fft, n_fft // 4) + level  # dB
        duration = len(signal) / rate
        ax.imshow(
            spec.T,
            origin="lower",
            aspect="auto",
            extent=(0.0, duration, 0.0, rate / 2),
            vmin=-80.0,
            vmax=40.0,
            cmap="magma",
        )
        ax.set_ylim(0.0, hr_rate / 2)
        ax.set_title(name)
        ax.set_xlabel("time (s)")
    axes[0].set_ylabel("frequency (Hz)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # no Software stamp: the bytes depend on the data only
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None})
    return Path(path)


def low_rate(config: AudioModelConfig) -> float:
    """The model's input rate; an integer whenever hr_rate is divisible by the ratio."""
    rate = config.hr_rate / config.ratio
    return int(rate) if rate.is_integer() else rate


def superresolve_file(
    run_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    png_path: str | Path | None = None,
    high_band_gain: float | None = None,
) -> dict[str, Any]:
    """Super-resolve an audio file of any length and rate with the model in `run_dir`.

    The input is read as mono and resampled (soxr) to the model's low rate, hr_rate / ratio.
    A file holding its band above that rate's Nyquist frequency but not up to hr_rate's (an 8
    kHz file to the 4 -> 16 kHz model, or a file resampled up from one: `input_band_hz`) keeps
    its own band up to there and the model fills the band above (`superresolve_wide`). A file
    at hr_rate or above whose band is whole is the reference: it is taken down to the low
    rate, the PNG shows it and the result carries SNR/LSD against it (model, spline and sinc).
    Writes the WAV at hr_rate and the spectrogram PNG (default: beside the WAV).
    `high_band_gain` replaces the spectral model's calibrated level of the band it paints
    (1: the trained level, brighter and the lowest LSD).
    """
    model = load_model(run_dir)
    spectral = painter(model)
    if high_band_gain is not None:
        spectral.config = with_high_band_gain(spectral.config, high_band_gain, run_dir)
    config = model.config
    lr = load_audio(input_path, low_rate(config))
    # Read at most at the output rate: a resampler's edge there lies above any that matters.
    rate = min(sf.info(str(input_path)).samplerate, config.hr_rate)
    audio = load_audio(input_path, rate)
    estimate, band, level = superresolve_audio(model, audio, rate, lr)
    wide = keeps_own_band(band, config)
    shown, shown_rate = (audio, rate) if wide else (lr, low_rate(config))
    write_wav(output_path, estimate, config.hr_rate)
    png_path = Path(png_path) if png_path else Path(output_path).with_suffix(".png")
    reference = None
    if band == config.hr_rate / 2:
        reference = fit_length(audio, len(estimate))
    spectrogram_png(
        png_path,
        shown,
        estimate,
        config.hr_rate,
        config.ratio,
        reference,
        Path(input_path).name,
        shown_rate,
    )
    result: dict[str, Any] = {
        "input": str(input_path),
        "output": str(output_path),
        "png": str(png_path),
        "model": str(run_dir),
        "hr_rate": config.hr_rate,
        "ratio": config.ratio,
        "seconds": round(len(estimate) / config.hr_rate, 3),
    }
    result["input_band_hz"] = band
    if wide:
        result["kept_input_band_hz"] = band
    if isinstance(spectral.config, BWEConfig):
        # What this input ran at: pass_below depends on its band edge (`BWEConfig.for_input`).
        # The level it painted at: per input under a budget (`BWEConfig.high_band_budget`).
        result["high_band_gain"] = level
        result["pass_below"] = spectral.config.for_input(lr).pass_below
    if reference is not None:
        n = len(estimate)
        result["metrics"] = {
            "model": evaluate_pair(reference, estimate, config.ratio),
            "spline": evaluate_pair(reference, spline_upsample(lr, config.ratio, n), config.ratio),
            "sinc": evaluate_pair(reference, sinc_upsample(lr, config.ratio, n), config.ratio),
        }
    return result


def with_high_band_gain(config: AudioModelConfig, gain: float, run_dir: str | Path) -> BWEConfig:
    """`config` with another high-band level; only the spectral model has one."""
    if not isinstance(config, BWEConfig):
        raise ValueError(
            f"{run_dir}: a high-band gain applies to the spectral model (--arch bwe) only; "
            "this is a U-Net"
        )
    return dataclasses.replace(
        config, high_band_gain=gain, high_band_budget=None, wide_input_gain=None
    )


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad to `n` samples (resamplers may round a length by a sample)."""
    x = np.asarray(x, dtype=np.float32)[:n]
    return np.pad(x, (0, n - len(x)))


def latest_run(models_dir: str | Path) -> Path:
    """The most recently completed run under `models_dir` (config.json is written last)."""
    runs = [
        config.parent
        for config in Path(models_dir).glob("*/config.json")
        if (config.parent / "model.safetensors").exists()
    ]
    if not runs:
        raise FileNotFoundError(f"no trained audio model under {models_dir}; train one first")
    return max(runs, key=lambda run: ((run / "config.json").stat().st_mtime_ns, run.name))
