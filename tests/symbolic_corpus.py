"""A tiny symbolic data directory in the contract's format, for the music model tests.

Pieces are short four-voice progressions written as notes and run through the real tokenizer
and key augmentation, so the token files have exactly the shape the data stage writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.io import write_bytes_atomic, write_parquet_atomic
from datasets.symbolic.augment import transposed_tokens
from datasets.symbolic.tokenizer import Vocab
from datasets.symbolic.tokens import token_table

VOCAB = Vocab(steps_per_beat=4, max_duration=16, max_shift=16)
# I-IV-V-I style chords (bass, tenor, alto, soprano), one per half note.
PROGRESSIONS = [
    [(48, 55, 64, 72), (53, 57, 65, 72), (55, 59, 62, 74), (48, 55, 64, 72)],
    [(45, 57, 64, 72), (50, 57, 65, 74), (52, 56, 64, 71), (45, 57, 64, 69)],
    [(43, 55, 62, 71), (48, 55, 64, 72), (50, 57, 62, 66), (43, 55, 62, 67)],
]


def piece_notes(index: int, repeats: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chords = PROGRESSIONS[index % len(PROGRESSIONS)] * repeats
    onset, duration, pitch = [], [], []
    for i, chord in enumerate(chords):
        for p in chord:
            onset.append(8 * i)
            duration.append(8)
            pitch.append(p)
        onset.append(8 * i + 4)  # a passing note in the soprano
        duration.append(4)
        pitch.append(chord[-1] + 2)
    return np.array(onset), np.array(duration), np.array(pitch)


def write_symbolic(
    data_dir: Path, pieces: dict[str, int] | None = None, keys: tuple[int, ...] = (0, 2)
) -> Path:
    """data_dir/symbolic/{vocab.json,tokens/<split>.parquet}; returns the symbolic dir."""
    pieces = pieces or {"train": 6, "valid": 2, "test": 2}
    symbolic = data_dir / "symbolic"
    write_bytes_atomic(symbolic / "vocab.json", VOCAB.to_json().encode())
    number = 0
    for split, count in pieces.items():
        rows = []
        for _ in range(count):
            onset, duration, pitch = piece_notes(number)
            for semitones, tokens, beats, dropped in transposed_tokens(
                onset, duration, pitch, VOCAB, keys
            ):
                rows.append(
                    {
                        "piece_id": f"piece{number:03d}",
                        "split": split,
                        "transpose": semitones,
                        "tokens": tokens.tolist(),
                        "beats": beats.tolist(),
                        "bar_steps": 16,
                        "n_notes": len(onset) - dropped,
                        "n_moved": 0,
                        "n_merged": 0,
                        "n_dropped": dropped,
                    }
                )
            number += 1
        write_parquet_atomic(symbolic / "tokens" / f"{split}.parquet", token_table(rows))
    return symbolic
