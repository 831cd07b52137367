"""The music model's configs and every preset and profile of them, in one place.

A preset is a model size (`PRESETS`: tiny, quick, full, large); a profile is what the user picks
with `--profile` (`PROFILES`: the training settings of tiny, quick, full, and large, which is
what `full` becomes on a GPU). `profile_configs` turns a profile into the model and training
configs a run uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

# Pieces the tiny and quick profiles take from a built-in corpus when no limit is given.
QUICK_LIMIT = 24


@dataclass(frozen=True)
class MusicConfig:
    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    d_ff: int = 1024
    dropout: float = 0.0
    seg_len: int = 256  # training segment length
    mem_len: int = 256  # hidden states kept from earlier segments (0: no memory)
    window: int = 0  # local attention window in tokens (0: all of memory + segment)
    relative: bool = True  # XL relative attention; False: learned absolute positions
    beat_embedding: bool = True
    max_bar_steps: int = 64  # position-in-bar values above this are clamped
    max_bars: int = 256  # bar indices above this are clamped

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> MusicConfig:
        """A model size from `PRESETS` for a vocabulary, with fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(vocab_size=vocab_size, **{**PRESETS[name], **overrides})

    def vanilla(self) -> MusicConfig:
        """The same size without the three additions: the honest baseline."""
        return dataclasses.replace(self, relative=False, mem_len=0, beat_embedding=False, window=0)

    @property
    def span(self) -> int:
        """How many past tokens (including itself) a token can attend to."""
        span = self.seg_len + self.mem_len
        return min(span, self.window) if self.window else span


# Model sizes; the vocabulary size comes from the data.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_layer": 2, "n_head": 2, "d_model": 32, "d_ff": 64, "seg_len": 16, "mem_len": 16},
    "quick": {"n_layer": 2, "n_head": 4, "d_model": 96, "d_ff": 256, "seg_len": 64, "mem_len": 64},
    # Real training sized for a CPU: about 2.2k tokens/s on one AVX2 core. The large model
    # runs at a quarter of that, which puts its step budget out of a CPU's reach.
    "full": {
        "n_layer": 4,
        "n_head": 6,
        "d_model": 192,
        "d_ff": 768,
        "seg_len": 128,
        "mem_len": 128,
        "dropout": 0.1,
    },
    # What `full` trains when a GPU is there.
    "large": {
        "n_layer": 6,
        "n_head": 8,
        "d_model": 256,
        "d_ff": 1024,
        "seg_len": 256,
        "mem_len": 256,
        "dropout": 0.1,
    },
}


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 100
    valid_every: int = 100
    valid_pieces: int = 32  # valid pieces scored during training (the full split at the end)
    shuffle_buffer: int = 256
    seed: int = 0
    bf16: bool = False  # autocast on a CPU with native bf16; on CUDA bf16 is always used
    # A model directory whose weights start the run instead of a random init (fine-tuning a
    # shipped model on another corpus, or a second schedule after a finished run).
    init_from: str | None = None


# The training settings of each profile (its model is the preset of the same name).
PROFILES: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        steps=60, batch_size=4, lr=3e-3, warmup=5, log_every=5, checkpoint_every=20
    ),
    "quick": TrainConfig(steps=300, batch_size=8, lr=2e-3, warmup=30, checkpoint_every=100),
    # About two epochs of the 12-key chorales (2.2 M training tokens) at 2048 tokens a step.
    "full": TrainConfig(
        steps=2000,
        batch_size=16,
        lr=1e-3,
        warmup=100,
        log_every=50,
        checkpoint_every=250,
        valid_every=500,
        valid_pieces=64,
        shuffle_buffer=1024,
        bf16=True,
    ),
    "large": TrainConfig(
        steps=20000,
        batch_size=16,
        lr=5e-4,
        warmup=500,
        log_every=50,
        checkpoint_every=500,
        valid_every=250,
        valid_pieces=64,
        shuffle_buffer=2048,
    ),
}


def profile_configs(
    profile: str, vocab_size: int, seed: int, **model_overrides: Any
) -> tuple[MusicConfig, TrainConfig]:
    """The model and training configs of a profile; `full` takes the large ones when a GPU is
    there (the only place that upgrade is made)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    if profile == "full" and torch.cuda.is_available():
        profile = "large"
    return (
        MusicConfig.preset(profile, vocab_size, **model_overrides),
        dataclasses.replace(PROFILES[profile], seed=seed),
    )
