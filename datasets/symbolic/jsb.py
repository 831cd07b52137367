"""The JSB chorales in Coconet's format and their serialization for the Music Transformer benchmark.

Coconet's `Jsb16thSeparated.json` holds `{"train": [...], "valid": [...], "test": [...]}`; each
chorale is a list of 16th-note steps and each step lists the pitches of soprano, alto, tenor and
bass (MIDI numbers; -1, NaN or null marks a resting voice, depending on the copy of the file).

The Music Transformer paper (Huang et al. 2018, section 4.1) serializes a chorale "in a grid-like
fashion": at every 16th-note step the four voices' pitches in the order S, A, T, B, one token each.
We do the same, so NLL per token on the valid split is in the same unit as the published figures.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

SPLITS = ("train", "valid", "test")
VOICES = 4
REST = -1
# Steps per bar: the chorales are in 4/4 on a 16th-note grid.
JSB_BAR_STEPS = 16
# Serialized token ids: pad=0, bos=1, eos=2, rest=3, then pitch p -> JSB_PITCH_OFFSET + p.
JSB_PAD, JSB_BOS, JSB_EOS, JSB_REST = 0, 1, 2, 3
JSB_PITCH_OFFSET = 4
JSB_VOCAB_SIZE = JSB_PITCH_OFFSET + 128


def serialization_json() -> str:
    """The JSB serialization as the vocab.json of a model trained on it."""
    return json.dumps(
        {
            "serialization": "Coconet Jsb16thSeparated: soprano, alto, tenor, bass tokens per "
            "16th-note step, bos before and eos after each chorale",
            "pad": JSB_PAD,
            "bos": JSB_BOS,
            "eos": JSB_EOS,
            "rest": JSB_REST,
            "pitch_offset": JSB_PITCH_OFFSET,
            "size": JSB_VOCAB_SIZE,
            "steps_per_bar": JSB_BAR_STEPS,
        },
        indent=2,
    )


def _pitch(value: object, where: str) -> int:
    if value is None or value == REST or (isinstance(value, float) and math.isnan(value)):
        return REST
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{where}: pitch {value!r} is not a whole MIDI number")
    if not 0 <= int(value) <= 127:
        raise ValueError(f"{where}: pitch {value!r} outside MIDI range 0..127")
    return int(value)


def load_jsb(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Read a Coconet-format JSB file: split -> chorales, each an int16 array (steps, 4).

    Columns are soprano, alto, tenor, bass; `REST` (-1) marks a silent voice. Raises ValueError
    naming the file and the place when the file does not have that shape.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read JSB chorales: {exc}") from exc
    if not isinstance(raw, dict) or not set(SPLITS) <= set(raw):
        raise ValueError(f"{path}: expected a JSON object with keys {list(SPLITS)}")
    out: dict[str, list[np.ndarray]] = {}
    for split in SPLITS:
        chorales = []
        for index, chorale in enumerate(raw[split]):
            where = f"{path} {split}[{index}]"
            if not isinstance(chorale, list) or not chorale:
                raise ValueError(f"{where}: a chorale must be a non-empty list of steps")
            steps = np.empty((len(chorale), VOICES), dtype=np.int16)
            for t, step in enumerate(chorale):
                if not isinstance(step, list) or len(step) != VOICES:
                    raise ValueError(f"{where} step {t}: expected {VOICES} voices, got {step!r}")
                steps[t] = [_pitch(v, f"{where} step {t}") for v in step]
            chorales.append(steps)
        out[split] = chorales
    return out


def serialize_chorale(chorale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One chorale as (tokens, beats): bos, then S A T B per 16th step, then eos.

    `beats[i]` is the 16th step token i belongs to (bos at step 0, eos after the last step), the
    same meaning as the symbolic tokenizer's beats, with `JSB_BAR_STEPS` steps per bar.
    """
    steps = np.asarray(chorale, dtype=np.int64)
    body = np.where(steps == REST, JSB_REST, steps + JSB_PITCH_OFFSET).reshape(-1)
    tokens = np.concatenate([[JSB_BOS], body, [JSB_EOS]]).astype(np.int32)
    step_of = np.repeat(np.arange(len(steps)), VOICES)
    beats = np.concatenate([[0], step_of, [len(steps)]]).astype(np.int32)
    return tokens, beats


def voice_ranges(chorales: list[np.ndarray]) -> np.ndarray:
    """(VOICES, 2) lowest and highest pitch each voice sings across `chorales` (rests ignored)."""
    steps = np.concatenate(chorales)
    ranges = np.empty((VOICES, 2), dtype=np.int64)
    for voice in range(VOICES):
        sung = steps[:, voice][steps[:, voice] != REST]
        ranges[voice] = (sung.min(), sung.max()) if len(sung) else (0, 127)
    return ranges


def fitting_transpositions(chorale: np.ndarray, ranges: np.ndarray) -> list[int]:
    """The shifts in -6..+5 semitones that keep every voice of `chorale` inside its range
    (`voice_ranges` of the training chorales): the keys this chorale could be sung in. 0 first."""
    shifts = []
    for shift in [0, *range(-6, 0), *range(1, 6)]:
        fits = True
        for voice in range(VOICES):
            sung = chorale[:, voice][chorale[:, voice] != REST].astype(np.int64) + shift
            if len(sung) and (sung.min() < ranges[voice, 0] or sung.max() > ranges[voice, 1]):
                fits = False
                break
        if fits:
            shifts.append(shift)
    return shifts


def transpose_chorale(chorale: np.ndarray, shift: int) -> np.ndarray:
    """`chorale` moved by `shift` semitones; rests stay rests."""
    return np.where(chorale == REST, REST, chorale + shift).astype(chorale.dtype)
