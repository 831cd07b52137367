"""The spectral model's inference bands, chosen on validation files (`models.audio.calibrate`)."""

from __future__ import annotations

from models.audio.calibrate import choose_budget, choose_gain, choose_pass_below, spread_files


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


def with_lsd(table: list[dict], lsd: dict[float, float]) -> list[dict]:
    return [row | {"lsd": lsd[row["gain"]]} for row in table]


def test_a_budget_replaces_the_one_level_only_where_it_holds_the_snr_with_a_lower_lsd() -> None:
    levels = with_lsd(
        rows({0.3: {"a": 0.1, "b": 0.2}, 0.2: {"a": 0.2, "b": 0.3}}), {0.3: 1.6, 0.2: 1.7}
    )
    budgets = rows({1.5: {"a": -0.1, "b": 0.4}, 1.0: {"a": 0.05, "b": 0.5}})
    assert choose_budget(with_lsd(budgets, {1.5: 1.3, 1.0: 1.4}), levels, 0.3) == 1.0
    # No lower LSD than the level's at its own choice: the level stays.
    assert choose_budget(with_lsd(budgets, {1.5: 1.3, 1.0: 1.65}), levels, 0.3) is None
    # No budget holds the spline's SNR on every part: the level stays.
    failing = rows({1.0: {"a": -0.05, "b": 0.5}, 0.5: {"a": -0.01, "b": 0.6}})
    assert choose_budget(with_lsd(failing, {1.0: 1.0, 0.5: 1.1}), levels, 0.3) is None
    assert choose_budget([], levels, 0.3) is None


def test_files_are_spread_over_each_part() -> None:
    files = [{"file_id": i, "path": f"speech/s{i:03d}.flac"} for i in range(100)]
    files += [{"file_id": 100 + i, "path": f"music/m{i}.flac"} for i in range(3)]
    chosen = spread_files(files, 5)
    speech = [row["file_id"] for row in chosen if row["path"].startswith("speech")]
    assert speech == [0, 25, 50, 74, 99]  # evenly spaced, not the first five
    assert len([row for row in chosen if row["path"].startswith("music")]) == 3


def test_it_passes_the_inputs_band_up_to_the_share_best_over_the_files_of_each_edge() -> None:
    margins = {  # (part, filter, files) -> SNR over the spline, per share
        0.75: {("speech", "soxr", 4): 0.2, ("music", "soxr", 4): -0.4, ("speech", "cheby", 4): 1.2},
        0.85: {("speech", "soxr", 4): 0.3, ("music", "soxr", 4): 0.5, ("speech", "cheby", 4): 1.1},
        1.0: {("speech", "soxr", 4): 0.4, ("music", "soxr", 4): 0.7, ("speech", "cheby", 4): 0.1},
    }
    table = [
        {
            "part": part,
            "filter": filter,
            "edge": "other",
            "n_files": files,
            "pass_below": share,
            "snr_over_spline_db": margin,
        }
        for share, cells in margins.items()
        for (part, filter, files), margin in cells.items()
    ]
    assert choose_pass_below(table, "other") == 0.85  # best on average, though not on soxr alone
    assert choose_pass_below(table, "sharp") is None  # no such inputs: the trained setting
    tied = [{**row, "snr_over_spline_db": 0.0} for row in table]
    assert choose_pass_below(tied, "other") == 0.75  # of equals, the least taken from the input
    # Each edge is chosen on its own rows, and a cell weighs as many files as it holds.
    sharp = [
        {**row, "edge": "sharp", "n_files": 40 if row["filter"] == "soxr" else 1} for row in table
    ]
    assert choose_pass_below(table + sharp, "sharp") == 1.0
    assert choose_pass_below(table + sharp, "other") == 0.85
