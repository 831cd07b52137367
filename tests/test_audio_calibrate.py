"""The spectral model's high-band level, chosen on validation files (`models.audio.calibrate`)."""

from __future__ import annotations

from models.audio.calibrate import choose_gain, spread_files


def rows(margins: dict[float, dict[str, float]]) -> list[dict]:
    return [
        {"part": part, "gain": gain, "snr_over_spline_db": margin}
        for gain, parts in margins.items()
        for part, margin in parts.items()
    ]


def test_it_keeps_the_loudest_band_at_which_every_part_beats_the_spline() -> None:
    table = rows(
        {
            1.0: {"speech": -1.2, "music": -0.5, "renders": 0.9},
            0.5: {"speech": -0.2, "music": 0.03, "renders": 0.8},
            0.3: {"speech": 0.1, "music": 0.2, "renders": 0.6},
            0.2: {"speech": 0.2, "music": 0.25, "renders": 0.4},
        }
    )
    assert choose_gain(table) == 0.3


def test_when_no_level_beats_the_spline_it_keeps_the_one_whose_worst_part_is_best() -> None:
    table = rows({1.0: {"a": -2.0, "b": 1.0}, 0.5: {"a": -0.4, "b": 0.5}, 0.3: {"a": -0.6}})
    assert choose_gain(table) == 0.5


def test_files_are_spread_over_each_part() -> None:
    files = [{"file_id": i, "path": f"speech/s{i:03d}.flac"} for i in range(100)]
    files += [{"file_id": 100 + i, "path": f"music/m{i}.flac"} for i in range(3)]
    chosen = spread_files(files, 5)
    speech = [row["file_id"] for row in chosen if row["path"].startswith("speech")]
    assert speech == [0, 25, 50, 74, 99]  # evenly spaced, not the first five
    assert len([row for row in chosen if row["path"].startswith("music")]) == 3
