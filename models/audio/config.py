"""The audio model's configs and every preset and profile of them, in one place.

A preset is a model size (`PRESETS`: tiny, quick, full, paper); a profile is what the user picks
with `--profile` (`PROFILES`: the training settings of tiny, quick, full, and paper, which is what
`full` becomes on a GPU). The evaluation and filter-mismatch tables say how much of the data each
profile evaluates on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from datasets.audio.signals import has_sharp_band_edge

# Files the tiny and quick profiles take from a built-in corpus when no limit is given.
QUICK_LIMIT = 24


@dataclass(frozen=True)
class AudioUNetConfig:
    widths: tuple[int, ...] = (128, 384, 512, 512)
    kernels: tuple[int, ...] = (65, 33, 17, 9)
    dropout: float = 0.5
    ratio: int = 4
    hr_rate: int = 16000
    patch: int = 8192  # training patch length at the high rate (training sets it from the data)
    # Below this share of the input's Nyquist frequency the output is the input: the network's
    # residual is high-passed there (`models.audio.unet.keep_input_band`), as the spectral
    # model keeps the band every anti-aliasing filter passes whole. None: the whole residual.
    keep_below: float | None = None

    def __post_init__(self) -> None:
        # config.json holds lists; the config holds tuples, so a loaded one equals its preset.
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "kernels", tuple(self.kernels))
        if len(self.widths) != len(self.kernels) or not self.widths:
            raise ValueError("widths and kernels must be non-empty and of equal length")
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernel lengths must be odd for 'same' padding: {self.kernels}")
        if self.patch % self.multiple:
            raise ValueError(f"patch {self.patch} is not a multiple of {self.multiple}")
        if self.keep_below is not None and not 0.0 < self.keep_below <= 1.0:
            raise ValueError(f"keep_below is a share of the input's band: {self.keep_below}")

    @property
    def depth(self) -> int:
        return len(self.widths)

    @property
    def multiple(self) -> int:
        """Input lengths must be multiples of this: every block and the bottleneck halve it."""
        return 2 ** (self.depth + 1)


@dataclass(frozen=True)
class BWEConfig:
    """The spectral bandwidth extender (`models.audio.bwe`): AP-BWE's design at a CPU's size
    (the published 4 -> 16 kHz model: 512 channels, 8 blocks, n_fft 1024, hop 80, window 320)."""

    channels: int = 128
    layers: int = 4  # ConvNeXt blocks per stream
    kernel: int = 7  # over frames
    expansion: int = 3  # MLP width / channels
    n_fft: int = 512
    hop: int = 64
    win: int = 256
    # Below this share of the input's Nyquist frequency every anti-aliasing filter passes the
    # band whole: there the output keeps the input's phase and its amplitude (with the spline's
    # droop undone), and only the band above is predicted.
    keep_below: float = 0.75
    # The output's log amplitude above the kept band is the network's prediction plus the
    # input's log amplitude times a weight per bin: 1 (False), or learned from 1 (True). Fixed,
    # the output carries the spline input's images of the low band (mirrored harmonics, and its
    # nulls at multiples of the low rate) unless the network cancels them bin by bin.
    learned_amplitude_skip: bool = False
    # Amplitude factor on the band above the input's Nyquist frequency, where the network
    # paints what the input lacks. Trained at 1; `models.audio.calibrate` then lowers it on
    # validation files until the SNR is at least the spline's, because a painted band whose
    # phase the input does not determine adds its energy to the waveform's error.
    high_band_gain: float = 1.0
    # Up to this share of the input's Nyquist frequency (None: keep_below) the output takes the
    # input's band, the spline's droop undone, in place of the network's prediction. Trained at
    # None; `models.audio.calibrate` raises it on validation files made with every training
    # filter: near the filter's edge the network guesses how much the unseen filter took away,
    # and where the filter passed the band whole the input is right and the guess is not.
    pass_below: float | None = None
    # The same for inputs with a sharp band edge (`datasets.audio.signals.has_sharp_band_edge`:
    # whole to 0.95 of their Nyquist frequency, as a high-quality resampler leaves them; None:
    # `pass_below`). Calibrated apart because there the input's band is right to the edge, while
    # inputs a gradual filter attenuated or no filter left aliased want the network's guess.
    pass_below_sharp_edge: float | None = None
    # A level per input instead of `high_band_gain`: the largest (at most 1) at which the painted
    # band's energy is at most this times the energy by which the output below the input's
    # Nyquist frequency corrects the spline input (`models.audio.infer.budget_level`). Where
    # the painted band's phase is unrelated to the truth's its energy adds to the error, and the
    # correction is what the output gained on the spline, so a budget near 1 keeps each input's
    # SNR near the spline's while an input whose correction is large (loud near 2 kHz, as
    # drums and band mixes are) gets a brighter band. None: `high_band_gain` for every input.
    # Calibrated (`models.audio.calibrate`) and kept only where it beats the one level.
    high_band_budget: float | None = None
    # `high_band_gain` for inputs wider than the model's (a rate between hr_rate / ratio and
    # hr_rate, as an 8 kHz file to a 4 -> 16 kHz model): their own band is kept up to their
    # Nyquist frequency (`models.audio.infer.superresolve_wide`), so the painted band's energy
    # weighs against a far smaller error and wants its own, lower level (None: high_band_gain).
    # Calibrated on validation files at hr_rate / 2.
    wide_input_gain: float | None = None
    ratio: int = 4
    hr_rate: int = 16000
    patch: int = 8192

    def as_trained(self) -> BWEConfig:
        """The settings the network trains at: every inference setting `models.audio.calibrate`
        chooses back at its trained value."""
        return dataclasses.replace(
            self,
            pass_below=None,
            pass_below_sharp_edge=None,
            high_band_gain=1.0,
            high_band_budget=None,
            wide_input_gain=None,
        )

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep_below <= 1.0:
            raise ValueError(f"keep_below is a share of the input's band: {self.keep_below}")
        if not 0.0 <= self.high_band_gain <= 1.0:
            raise ValueError(
                f"high_band_gain is an amplitude factor in [0, 1]: {self.high_band_gain}"
            )
        if self.high_band_budget is not None and not self.high_band_budget >= 0.0:
            raise ValueError(f"high_band_budget is a ratio of energies: {self.high_band_budget}")
        if self.wide_input_gain is not None and not 0.0 <= self.wide_input_gain <= 1.0:
            raise ValueError(
                f"wide_input_gain is an amplitude factor in [0, 1]: {self.wide_input_gain}"
            )
        for name in ("pass_below", "pass_below_sharp_edge"):
            share = getattr(self, name)
            if share is not None and not self.keep_below <= share <= 1.0:
                raise ValueError(
                    f"{name} is a share of the input's band from keep_below {self.keep_below} "
                    f"to 1: {share}"
                )
        if self.win > self.n_fft or self.hop > self.win:
            raise ValueError(f"need hop <= win <= n_fft: {self.hop}, {self.win}, {self.n_fft}")
        if self.patch % self.multiple:
            raise ValueError(f"patch {self.patch} is not a multiple of {self.multiple}")

    @property
    def multiple(self) -> int:
        """Input lengths are multiples of the hop: whole frames, so chunks join exactly."""
        return self.hop

    @property
    def nyquist_bin(self) -> int:
        """The first STFT bin above the input's Nyquist frequency (`high_band_gain`'s band)."""
        return (self.n_fft // 2) // self.ratio

    @property
    def kept_bins(self) -> int:
        """The STFT bins the network leaves to the input (`keep_below`)."""
        return int(self.keep_below * (self.n_fft // 2) / self.ratio)

    @property
    def pass_bins(self) -> int:
        """The STFT bins the output takes from the input (`pass_below`, else `keep_below`)."""
        share = self.keep_below if self.pass_below is None else self.pass_below
        return int(share * (self.n_fft // 2) / self.ratio)

    def for_input(self, lr: np.ndarray) -> BWEConfig:
        """The settings for one low-rate input: `pass_below_sharp_edge` as its `pass_below`
        when it has a sharp band edge and that share is set; else these."""
        if self.pass_below_sharp_edge is None or not has_sharp_band_edge(lr):
            return self
        return dataclasses.replace(self, pass_below=self.pass_below_sharp_edge)

    def for_wide_input(self) -> BWEConfig:
        """The settings for an input wider than the model's: `wide_input_gain` (the budget
        weighs a 4 kHz input's correction, not the wide input's own band's)."""
        gain = self.high_band_gain if self.wide_input_gain is None else self.wide_input_gain
        return dataclasses.replace(self, high_band_gain=gain, high_band_budget=None)


@dataclass(frozen=True)
class GatedConfig:
    """The gated model (`models.audio.gated`): a logistic gate on features of the input either
    sends the whole input to the spectral model or to a U-Net (`route_above`, as shipped) or
    moves the spectral model's output toward the U-Net's block by block. Only inference
    settings of its own; the gate's coefficients are weights beside the two networks'."""

    spectral: BWEConfig
    unet: AudioUNetConfig
    block: int = 4096  # samples at the output rate per gate decision: 256 ms at 16 kHz
    bands: int = 16  # log-spaced bands of the input's spectrum the gate reads
    # Blocks whose weight is below this take the spectral model's output alone, and those
    # above 1 minus this the U-Net's: the other network does not run there. The gate is
    # nearly always shut on recordings and open on the renders, so each costs one network.
    closed_below: float = 0.02
    # With a number, the whole input goes to one network: the U-Net where the mean of its
    # blocks' gate weights is above it, else the spectral model. A block gate opened on a few
    # blocks of real piano notes the U-Net loses up to 2 dB on; a whole-input decision kept
    # every recording on the spectral model (chosen on validation files by
    # `models.audio.gate.choose_route`; docs/AUDIO_MODEL.md, 2026-12-04).
    route_above: float | None = None

    def __post_init__(self) -> None:
        # config.json holds the two networks' configs as objects.
        if isinstance(self.spectral, dict):
            object.__setattr__(self, "spectral", BWEConfig(**self.spectral))
        if isinstance(self.unet, dict):
            object.__setattr__(self, "unet", AudioUNetConfig(**self.unet))
        if (self.spectral.ratio, self.spectral.hr_rate) != (self.unet.ratio, self.unet.hr_rate):
            raise ValueError(
                f"the spectral model ({self.spectral.ratio}x to {self.spectral.hr_rate} Hz) and "
                f"the U-Net ({self.unet.ratio}x to {self.unet.hr_rate} Hz) differ"
            )
        if self.block <= 0 or self.bands <= 0 or not 0.0 <= self.closed_below < 0.5:
            raise ValueError(
                f"block {self.block} and bands {self.bands} must be positive, closed_below "
                f"{self.closed_below} in [0, 0.5)"
            )
        if self.route_above is not None and not 0.0 <= self.route_above <= 1.0:
            raise ValueError(f"route_above {self.route_above} must be in [0, 1]")

    @property
    def ratio(self) -> int:
        return self.spectral.ratio

    @property
    def hr_rate(self) -> int:
        return self.spectral.hr_rate

    @property
    def features(self) -> int:
        """The gate's inputs: the bands' log shares, the spectral flatness, the block's level."""
        return self.bands + 2


AudioModelConfig = AudioUNetConfig | BWEConfig | GatedConfig


PRESETS: dict[str, AudioModelConfig] = {
    # For tests: trains in seconds.
    "tiny": AudioUNetConfig(widths=(8, 16), kernels=(9, 9), dropout=0.0),
    # `--profile quick`: a couple of minutes on 2 CPU cores.
    "quick": AudioUNetConfig(widths=(16, 32, 64), kernels=(33, 17, 9), dropout=0.0),
    # `--profile full` on a CPU: the paper's depth at a quarter of its widths (2.1 M parameters),
    # its kernels halved (the 65-tap first layer alone cost 2.5x the time per step here), and no
    # dropout (dropout costs ~2.7x on a CPU, and a model this small underfits rather than
    # overfits). At an eighth of the widths (0.53 M) it stalled at +0.2 dB over the spline on the
    # renders; at a quarter its validation SNR was +3.4 dB after 500 steps (docs/AUDIO_MODEL.md).
    "full": AudioUNetConfig(widths=(32, 64, 128, 128), kernels=(33, 17, 9, 9), dropout=0.0),
    # The gated model's U-Net (`models.audio.gated`): `full` at half its widths, a quarter of
    # its cost (28x real time on one core in float32, 55x in bfloat16, where `full` runs
    # 9-12x). On the renders alone,
    # its band under 1.5 kHz kept, it was flat for 500 steps and then learned: +1.9 dB over the
    # spline on validation renders after 1,500 steps, +4.1 after 3,000 (docs/AUDIO_MODEL.md).
    "narrow": AudioUNetConfig(widths=(16, 32, 64, 64), kernels=(33, 17, 9, 9), dropout=0.0),
    # The paper's widths and dropout: what `--profile full` trains on a GPU.
    "paper": AudioUNetConfig(),
    # The spectral model (`--arch bwe`) at each profile's size.
    "bwe-tiny": BWEConfig(
        channels=16, layers=1, n_fft=128, hop=32, win=128, learned_amplitude_skip=True
    ),
    "bwe-quick": BWEConfig(channels=64, layers=2, learned_amplitude_skip=True),
    "bwe-full": BWEConfig(learned_amplitude_skip=True),
}


def model_config_class(raw: dict[str, Any]) -> type[AudioModelConfig]:
    """Which audio model a config.json's fields describe (the spectral one has an FFT size,
    the gated one both networks' configs)."""
    if "spectral" in raw:
        return GatedConfig
    return BWEConfig if "n_fft" in raw else AudioUNetConfig


def preset(name: str, **overrides: Any) -> AudioModelConfig:
    """A model size from `PRESETS`, with fields overridden (e.g. ratio, hr_rate)."""
    if name not in PRESETS:
        raise ValueError(f"unknown audio model preset {name!r}; choose from {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


@dataclass(frozen=True)
class AudioTrainConfig:
    preset: str = "quick"
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-4  # the paper's Adam settings: lr 3e-4, betas (0.9, 0.999)
    # Weight of the multi-resolution STFT term; 0 = MSE only. The STFT term is scale-free (about
    # 1) while the MSE of music in [-1, 1] is about 1e-4, so useful weights are small (~1e-5);
    # beside the relative MSE (about 0.1) they are near 0.03.
    stft_weight: float = 0.0
    # The waveform term per patch over the patch's power (an SNR's inverse), so a quiet patch
    # weighs as much as a loud one against the scale-free STFT term; off: the plain MSE.
    relative_mse: bool = False
    # Cosine decay of the learning rate to `min_lr_ratio` of it over `steps`; off: constant.
    cosine: bool = False
    min_lr_ratio: float = 0.1
    # How batches draw on a mixed corpus's parts (`models.audio.data.iter_mixed_epoch`): a part
    # with n rows has weight n ** part_exponent (0: equal shares); None: the shards in turn.
    part_exponent: float | None = None
    # A model directory (a run, or a shipped model; of a gated one, its network of this
    # run's architecture) whose weights start the run: fine-tuning.
    # Its config is the model's (architecture, sizes, trained settings); its optimizer state and
    # steps are not taken. None: the preset's model from its initialisation.
    init_from: str | None = None
    # The U-Net's `keep_below` for this run (None: the model's own): a run started from a
    # model without a kept band can learn with one.
    keep_below: float | None = None
    # Train on these parts of a mixed corpus only (`datasets.audio.dataset.file_parts`: "bach",
    # "recordings-speech", ...), drawn by `part_exponent` (None: by their sizes); None: all.
    parts: tuple[str, ...] | None = None
    seed: int = 0
    log_every: int = 25
    checkpoint_every: int = 100
    eval_split: str = "valid"
    eval_patches: int = 64


PROFILES: dict[str, AudioTrainConfig] = {
    # For task and flow tests: seconds.
    "tiny": AudioTrainConfig(
        preset="tiny",
        steps=30,
        batch_size=4,
        lr=3e-3,
        log_every=10,
        checkpoint_every=10,
        eval_patches=8,
    ),
    # `--profile quick`: about two minutes on 2 CPU cores at patch 8192.
    "quick": AudioTrainConfig(
        preset="quick",
        steps=100,
        batch_size=8,
        lr=3e-3,
        log_every=20,
        checkpoint_every=50,
        eval_patches=16,
    ),
    # `--profile full` on a CPU: 41 minutes on 2 cores (on the renders alone, +8.8 dB over the
    # spline on the held-out ones; on the mix of recordings and renders +0.05:
    # docs/AUDIO_MODEL.md); the rate falls on a cosine to a tenth of it.
    "full": AudioTrainConfig(
        preset="full",
        steps=4000,
        batch_size=8,
        lr=1e-3,
        cosine=True,
        log_every=250,
        checkpoint_every=250,
        eval_patches=64,
    ),
    # What `full` trains on a GPU: the paper's model with its Adam learning rate (1e-3 suits the
    # small CPU model); 8200 steps of 32 patches are 12.7 epochs of the chorale renders, 16.7 min
    # on one H100.
    "paper": AudioTrainConfig(
        preset="paper",
        steps=8200,
        batch_size=32,
        lr=3e-4,
        log_every=200,
        checkpoint_every=1000,
        eval_patches=64,
    ),
}


# The spectral model's training where it differs from the U-Net's at the same profile. It is
# 2-3x cheaper per step, so `full` takes many more steps of bigger batches, and it learns the
# high band's magnitude from the multi-resolution STFT term, which the waveform MSE alone
# barely rewards. The waveform term is the relative MSE, so that balance does not move with a
# patch's loudness (docs/AUDIO_MODEL.md has the pilots behind the loss and the weight).
BWE_TRAINING: dict[str, dict[str, Any]] = {
    "tiny": {"relative_mse": True, "stft_weight": 0.03},
    "quick": {"relative_mse": True, "stft_weight": 0.03},
    "full": {
        "steps": 20000,
        "batch_size": 16,
        "relative_mse": True,
        "stft_weight": 0.03,
        # Speech, music and renders in equal shares: drawn by their hours, music (a tenth of
        # them) left the model painting a speech-like high band onto it.
        "part_exponent": 0.0,
        "cosine": True,
        "log_every": 250,
        "checkpoint_every": 250,
    },
}


def profile_config(
    profile: str, seed: int, arch: str = "unet", **overrides: Any
) -> AudioTrainConfig:
    """The training config of a profile for `arch` ("unet", or "bwe": the `bwe-<profile>`
    preset with `BWE_TRAINING`); the U-Net's `full` takes the paper's when a GPU is there (the
    only place that upgrade is made)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    if arch == "bwe":
        base = dataclasses.replace(
            PROFILES[profile], preset=f"bwe-{profile}", **BWE_TRAINING[profile]
        )
    elif arch == "unet":
        base = PROFILES["paper" if profile == "full" and torch.cuda.is_available() else profile]
    else:
        raise ValueError(f"unknown audio model {arch!r}; choose from unet, bwe")
    return dataclasses.replace(base, **{"seed": seed, **overrides})


# Whole-file evaluation per profile: (most files, seconds of each file); None = all of it.
EVAL_LIMITS: dict[str, tuple[int | None, float | None]] = {
    "tiny": (2, 4.0),
    "quick": (4, 20.0),
    "full": (None, None),
}
# The filter-mismatch study trains one model per filter: a profile smaller than the run's, on
# the first files of the train split (all of it would be one model's data five times over).
MISMATCH_PROFILE = {"tiny": "tiny", "quick": "tiny", "full": "quick"}
MISMATCH_FILES = {"tiny": 4, "quick": 8, "full": 40}
