"""Choose the inference settings of the spectral model on validation files: `BWEConfig.pass_below`
and `pass_below_sharp_edge` (how far up the output keeps the input's own band),
`high_band_gain` (the level of the band above the input's Nyquist frequency), or in its place
`high_band_budget` (a level per input), and `wide_input_gain` (the level for inputs wider than
the model's).

The input's band near the anti-aliasing filter's edge: the network is trained with a random
filter per file and predicts the band from `keep_below` (0.75 of the input's Nyquist frequency)
up, guessing what the filter it cannot see took away. Where the filter passed that band whole
the guess loses to the input itself: on held-out tabla made with soxr, taking the input's band
up to its Nyquist frequency instead of 0.8 of it lowered the error in 1.5-2 kHz by 16 dB. But
where a gradual filter attenuated the band (Chebyshev) or no filter left it aliased, the guess
is better. Part of that the input itself tells: `has_sharp_band_edge` finds the band a
high-quality resampler leaves, whole to 0.95 of Nyquist. So `choose_pass_below` keeps, for
inputs with a sharp edge (`pass_below_sharp_edge`) and for the others (`pass_below`) apart, the
share in `PASS_SHARES` whose SNR over the spline, averaged over their files of every part made
with every training filter (`FILTERS`, or the run's one filter), is highest.

The band above: trained with the waveform loss and the STFT term, the network paints it at a
level the STFT term asks for. Where the input does not determine that band's phase (measured on
held-out speech and recordings: correlation with the truth near 0 above 2 kHz, against 0.4 on
the renders) the painted band adds its own energy to the waveform's error, and the SNR falls
below the spline's, whose band is empty. The log-spectral distance moves slowly with the level
(2 log10 of the factor per bin) while the error energy moves with its square, so a lower level
keeps most of the LSD gain and gives back the SNR. `choose_gain` keeps the largest level in
`GAINS` at which the model's mean SNR is at least the spline's on every part (on inputs made
with the evaluation filter); when none is, the one whose worst part is best.

One level for every input is set by the input whose SNR it costs most. `budget_table` tries a
level per input instead: the painted band's energy at most a budget times the energy by which
the output below the input's Nyquist frequency corrects the spline input (`budget_level`).
Where the painted phase is unrelated to the truth's, the first adds to the error what the second
took from it, so a budget near 1 keeps every input near the spline's SNR, while inputs loud near
2 kHz (drums, band mixes), whose correction is large, get a brighter band. `choose_budget`
keeps the largest budget at which every part holds the spline's SNR, and only where the parts'
mean LSD there is lower than at the one level.

Inputs wider than the model's (8 kHz files to the 4 -> 16 kHz model) keep their own band up to
their Nyquist frequency (`models.audio.infer.superresolve_wide`); the painted band above it
then adds its energy to a smaller error (on the calibration's speech files the spline's SNR is
26.8 dB from 8 kHz against 20.5 dB from 4 kHz), so `wide_table` and `choose_gain` pick its
own level, `wide_input_gain`, on the same files taken to half the output rate.

`calibrate` runs them all on the first seconds of a spread of validation files per part, writes
them into the model's `config.json` and the tables (with LSD beside SNR and the trained level's
correlation with the truth per band) to `calibration.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from datasets.audio.dataset import corpus_part
from datasets.audio.pairs import degrade
from datasets.audio.signals import FILTERS, has_sharp_band_edge, sinc_upsample, spline_upsample
from datasets.io import write_json_atomic
from models.audio.bwe import BandwidthExtender
from models.audio.evaluate import eval_filter, read_hr, run_pairs_info, split_files
from models.audio.infer import (
    WIDE_RATIO,
    budget_level,
    fit_length,
    load_model,
    superresolve,
    superresolve_bands,
    superresolve_wide,
)
from models.audio.metrics import band_cross_powers, evaluate_pair, lsd, snr_db
from models.checkpoint import CONFIG_FILE

GAINS = (1.0, 0.7, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15)
# Levels tried for wide inputs (`BWEConfig.wide_input_gain`), calibrated on inputs at the
# output rate over `WIDE_RATIO`: their own band leaves a far smaller error for the painted band
# to add to, so the levels go lower.
WIDE_GAINS = (0.5, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.03)
# Budgets tried for a level per input (`BWEConfig.high_band_budget`): the painted band's energy
# over the correction's. Near 1 each input's SNR stays near the spline's when the painted phase
# is unrelated to the truth's.
BUDGETS = (2.0, 1.5, 1.25, 1.0, 0.75, 0.5, 0.3, 0.2, 0.1)
# Shares of the input's Nyquist frequency up to which the output may take the input's band.
PASS_SHARES = (0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
# Bands (Hz, at 16 kHz) of the correlation between the trained model's output and the truth.
CORRELATION_EDGES = [0.0, 1500.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0]
CALIBRATION_FILE = "calibration.json"
# The `BWEConfig` fields `calibrate` chooses (and records under these names).
CALIBRATED_SETTINGS = (
    "pass_below",
    "pass_below_sharp_edge",
    "high_band_gain",
    "high_band_budget",
    "wide_input_gain",
)
# Per profile: (files per part, first seconds of each).
CALIBRATION_LIMITS: dict[str, tuple[int, float]] = {
    "tiny": (2, 2.0),
    "quick": (6, 4.0),
    "full": (40, 6.0),
}


def spread_files(files: list[dict], per_part: int) -> list[dict]:
    """Up to `per_part` files of each part (`corpus_part`), evenly spaced by file_id, so every
    speaker block and song of the split has its chance rather than the first ones."""
    chosen = []
    for part in sorted({corpus_part(row["path"]) for row in files}):
        rows = [row for row in files if corpus_part(row["path"]) == part]
        picks = np.linspace(0, len(rows) - 1, min(per_part, len(rows))).round().astype(int)
        chosen += [rows[i] for i in sorted(set(picks.tolist()))]
    return chosen


def read_references(
    data_dir: str | Path, files: list[dict], max_seconds: float
) -> list[tuple[str, np.ndarray]]:
    """(part, the first `max_seconds` of the high-rate file) per file: read once, for both
    tables."""
    return [(corpus_part(row["path"]), read_hr(data_dir, row, max_seconds)) for row in files]


def pass_table(
    model: BandwidthExtender,
    references: list[tuple[str, np.ndarray]],
    filters: tuple[str, ...],
    shares: tuple[float, ...] = PASS_SHARES,
) -> list[dict[str, Any]]:
    """One row per (part, filter, edge, share of `shares` at or above `keep_below`): the mean
    SNR of the model with `pass_below` at that share over the part's files whose input made
    with that filter has a sharp band edge or not (`edge`: "sharp" or "other",
    `has_sharp_band_edge`), beside the spline's."""
    trained = model.config
    shares = tuple(share for share in shares if share >= trained.keep_below)
    # (part, filter, edge, share) -> [(model SNR, spline SNR)] per file
    cells: dict[tuple[str, str, str, float], list[tuple[float, float]]] = {}
    try:
        for part, hr in references:
            for filter in filters:
                lr = degrade(hr, trained.ratio, filter)
                edge = "sharp" if has_sharp_band_edge(lr) else "other"
                spline = snr_db(hr, spline_upsample(lr, trained.ratio, len(hr)))
                for share in shares:
                    model.config = dataclasses.replace(trained, pass_below=share)
                    estimate = fit_length(superresolve(model, lr), len(hr))
                    cells.setdefault((part, filter, edge, share), []).append(
                        (snr_db(hr, estimate), spline)
                    )
    finally:
        model.config = trained
    rows = []
    for (part, filter, edge, share), pairs in sorted(cells.items()):
        snr, spline = (float(value) for value in np.mean(pairs, axis=0))
        rows.append(
            {
                "part": part,
                "filter": filter,
                "edge": edge,
                "pass_below": share,
                "n_files": len(pairs),
                "snr_db": round(snr, 3),
                "spline_snr_db": round(spline, 3),
                "snr_over_spline_db": round(snr - spline, 3),
            }
        )
    return rows


def choose_pass_below(rows: list[dict[str, Any]], edge: str) -> float | None:
    """Of the rows for inputs with that `edge`, the share whose SNR over the spline, averaged
    over their files, is highest; of equals, the lowest (the least taken from the input). None
    without such rows."""
    # share -> (SNR over the spline, files) per (part, filter)
    cells: dict[float, list[tuple[float, int]]] = {}
    for row in rows:
        if row["edge"] == edge:
            cells.setdefault(row["pass_below"], []).append(
                (row["snr_over_spline_db"], row["n_files"])
            )

    def mean_margin(share: float) -> float:
        margins, files = zip(*cells[share], strict=True)
        return float(np.average(margins, weights=files))

    return max(sorted(cells), key=mean_margin) if cells else None


def gain_table(
    model: BandwidthExtender,
    references: list[tuple[str, np.ndarray]],
    filter: str,
    gains: tuple[float, ...] = GAINS,
) -> list[dict[str, Any]]:
    """One row per (part, gain): the mean SNR and LSD of the model at that high-band gain over
    the part's files, beside the spline's SNR and the sinc's LSD; at the trained gain also the
    correlation with the reference per band of `CORRELATION_EDGES` (`band_cross_powers`)."""
    trained, rate = model.config, model.config.hr_rate
    cross: dict[str, np.ndarray] = {}

    def add_cross_powers(part: str, gain: float, hr: np.ndarray, estimate: np.ndarray) -> None:
        if gain == trained.high_band_gain:
            powers = band_cross_powers(hr, estimate, rate, CORRELATION_EDGES)
            cross[part] = cross.get(part, 0) + powers

    per_file = _per_file_rows(
        model,
        references,
        filter,
        trained.ratio,
        "high_band_gain",
        gains,
        superresolve,
        add_cross_powers,
    )
    rows = _mean_rows(per_file, gains)
    for row in rows:
        if row["gain"] == trained.high_band_gain and row["part"] in cross:
            sums = cross[row["part"]]
            correlation = sums[:, 0] / np.sqrt(np.maximum(sums[:, 1] * sums[:, 2], 1e-30))
            row["correlation"] = {
                f"{low:.0f}-{high:.0f} Hz": round(float(value), 3)
                for (low, high), value in zip(
                    itertools.pairwise(CORRELATION_EDGES), correlation, strict=True
                )
            }
    return rows


def _per_file_rows(
    model: BandwidthExtender,
    references: list[tuple[str, np.ndarray]],
    filter: str,
    ratio: int,
    setting: str,
    gains: tuple[float, ...],
    run: Callable[[BandwidthExtender, np.ndarray], np.ndarray],
    on_estimate: Callable[[str, float, np.ndarray, np.ndarray], None] | None = None,
) -> list[dict[str, Any]]:
    """Per reference and gain, the model's SNR and LSD with the config field `setting` at that
    gain, on the reference degraded by `ratio` and rebuilt by `run(model, input)`, beside the
    spline's SNR and the sinc's LSD of that input; `on_estimate(part, gain, reference,
    estimate)` sees every estimate. The model's config is restored afterwards."""
    trained = model.config
    per_file: list[dict[str, Any]] = []
    try:
        for part, hr in references:
            lr = degrade(hr, ratio, filter)
            baseline = _baselines(part, hr, lr, ratio)
            for gain in gains:
                model.config = dataclasses.replace(trained, **{setting: gain})
                estimate = fit_length(run(model, lr), len(hr))
                per_file.append({**baseline, "gain": gain, **evaluate_pair(hr, estimate, ratio)})
                if on_estimate is not None:
                    on_estimate(part, gain, hr, estimate)
    finally:
        model.config = trained
    return per_file


def _baselines(part: str, hr: np.ndarray, lr: np.ndarray, ratio: int) -> dict[str, Any]:
    """A reference's part, the spline's SNR and the sinc's LSD from its input `lr`."""
    return {
        "part": part,
        "spline_snr_db": snr_db(hr, spline_upsample(lr, ratio, len(hr))),
        "sinc_lsd": lsd(hr, sinc_upsample(lr, ratio, len(hr))),
    }


def _mean_rows(per_file: list[dict[str, Any]], gains: tuple[float, ...]) -> list[dict[str, Any]]:
    """Per (part, gain), the means of per-file rows (part, gain, snr_db, spline_snr_db, lsd,
    sinc_lsd, and where they have one the input's `level`): the SNR over the spline's and the
    LSD over the sinc's."""
    rows = []
    for part in sorted({r["part"] for r in per_file}):
        for gain in gains:
            chosen = [r for r in per_file if r["part"] == part and r["gain"] == gain]
            mean = {k: float(np.mean([r[k] for r in chosen])) for k in chosen[0] if k != "part"}
            rows.append(
                {
                    "part": part,
                    "gain": gain,
                    "n_files": len(chosen),
                    "snr_db": round(mean["snr_db"], 3),
                    "spline_snr_db": round(mean["spline_snr_db"], 3),
                    "snr_over_spline_db": round(mean["snr_db"] - mean["spline_snr_db"], 3),
                    "lsd": round(mean["lsd"], 3),
                    "lsd_over_sinc": round(mean["lsd"] / mean["sinc_lsd"], 3),
                    **({"mean_level": round(mean["level"], 3)} if "level" in mean else {}),
                }
            )
    return rows


def budget_table(
    model: BandwidthExtender,
    references: list[tuple[str, np.ndarray]],
    filter: str,
    budgets: tuple[float, ...] = BUDGETS,
) -> list[dict[str, Any]]:
    """`gain_table` for a level per input: one row per (part, budget) of `budgets`
    (`BWEConfig.high_band_budget`, under `gain`), with the mean level the inputs got. The
    model runs once per file (`superresolve_bands`); every budget is a sum of its two bands."""
    ratio = model.config.ratio
    per_file: list[dict[str, Any]] = []
    for part, hr in references:
        lr = degrade(hr, ratio, filter)
        x, below, above = superresolve_bands(model, lr)
        baseline = _baselines(part, hr, lr, ratio)
        for budget in budgets:
            level = budget_level(x, below, above, budget)
            estimate = fit_length(below + np.float32(level) * above, len(hr))
            metrics = evaluate_pair(hr, estimate, ratio)
            per_file.append({**baseline, "gain": budget, "level": level, **metrics})
    return _mean_rows(per_file, budgets)


def choose_budget(
    budget_rows: list[dict[str, Any]], gain_rows: list[dict[str, Any]], gain: float
) -> float | None:
    """The budget `choose_gain` picks from `budget_rows`, where at it every part holds the
    spline's SNR and the parts' mean LSD is lower than at the one level `gain`; else None."""
    if not budget_rows:
        return None
    budget = choose_gain(budget_rows)

    def at(rows: list[dict[str, Any]], value: float) -> list[dict[str, Any]]:
        return [row for row in rows if row["gain"] == value]

    chosen = at(budget_rows, budget)
    if min(row["snr_over_spline_db"] for row in chosen) < 0:
        return None
    lsd_budget = np.mean([row["lsd"] for row in chosen])
    return budget if lsd_budget < np.mean([row["lsd"] for row in at(gain_rows, gain)]) else None


def wide_table(
    model: BandwidthExtender,
    references: list[tuple[str, np.ndarray]],
    filter: str,
    gains: tuple[float, ...] = WIDE_GAINS,
) -> list[dict[str, Any]]:
    """`gain_table` for inputs at half the output rate (`WIDE_RATIO`: 8 kHz to a 4 -> 16 kHz
    model), super-resolved by `superresolve_wide` at each `wide_input_gain`; the baselines are
    the spline and the sinc of that input."""
    rate = model.config.hr_rate // WIDE_RATIO

    def run(model: BandwidthExtender, wide: np.ndarray) -> np.ndarray:
        return superresolve_wide(model, wide, rate)

    per_file = _per_file_rows(model, references, filter, WIDE_RATIO, "wide_input_gain", gains, run)
    return _mean_rows(per_file, gains)


def choose_gain(rows: list[dict[str, Any]]) -> float:
    """The largest gain whose SNR is at least the spline's on every part; else the gain whose
    worst part is closest to it."""
    worst: dict[float, float] = {}
    for row in rows:
        worst[row["gain"]] = min(worst.get(row["gain"], np.inf), row["snr_over_spline_db"])
    passing = [gain for gain, margin in worst.items() if margin >= 0]
    return max(passing) if passing else max(worst, key=lambda gain: (worst[gain], gain))


def calibrate(
    model_dir: str | Path,
    data_dir: str | Path,
    split: str = "valid",
    per_part: int = CALIBRATION_LIMITS["full"][0],
    max_seconds: float = CALIBRATION_LIMITS["full"][1],
) -> dict[str, Any]:
    """Set `pass_below` and `pass_below_sharp_edge`, then `high_band_gain`, then
    `high_band_budget`, then `wide_input_gain`, in `model_dir`'s config.json from `split`'s
    files (module doc); write the tables to `calibration.json`. Returns {the settings of
    `CALIBRATED_SETTINGS`, "split", "filter", "filters", "pass_rows", "rows", "budget_rows",
    "wide_rows"}; without files in `split` all stay as trained and the tables are empty."""
    model_dir = Path(model_dir)
    model = load_model(model_dir, "cpu")
    if not isinstance(model, BandwidthExtender):
        raise ValueError(f"{model_dir}: only the spectral model has bands to calibrate")
    # From the settings it was trained with, so calibrating twice gives the same choice.
    model.config = model.config.as_trained()
    references = read_references(
        data_dir, spread_files(split_files(data_dir, split), per_part), max_seconds
    )
    train_filter = run_pairs_info(model_dir)["filter"]
    filters = tuple(FILTERS) if train_filter not in FILTERS else (train_filter,)
    pass_rows = pass_table(model, references, filters)
    # Without validation files (a corpus too small to split) the trained settings stand.
    model.config = dataclasses.replace(
        model.config,
        pass_below=choose_pass_below(pass_rows, "other"),
        pass_below_sharp_edge=choose_pass_below(pass_rows, "sharp"),
    )
    filter = eval_filter(train_filter)
    rows = gain_table(model, references, filter)
    if rows:
        model.config = dataclasses.replace(model.config, high_band_gain=choose_gain(rows))
    budget_rows = budget_table(model, references, filter)
    model.config = dataclasses.replace(
        model.config,
        high_band_budget=choose_budget(budget_rows, rows, model.config.high_band_gain),
    )
    # A model whose input rate is the output's over WIDE_RATIO has no wider inputs.
    wide_rows = wide_table(model, references, filter) if model.config.ratio > WIDE_RATIO else []
    if wide_rows:
        model.config = dataclasses.replace(model.config, wide_input_gain=choose_gain(wide_rows))
    config = model.config
    record = {
        **{key: getattr(config, key) for key in CALIBRATED_SETTINGS},
        "split": split,
        "filter": filter,
        "filters": list(filters),
        "pass_rows": pass_rows,
        "rows": rows,
        "budget_rows": budget_rows,
        "wide_rows": wide_rows,
    }
    write_json_atomic(model_dir / CALIBRATION_FILE, record)
    write_json_atomic(model_dir / CONFIG_FILE, dataclasses.asdict(config))
    return record


def main(argv: list[str] | None = None) -> None:
    """Calibrate a trained spectral model's inference bands (`pass_below`,
    `pass_below_sharp_edge`, `high_band_gain`, `high_band_budget`, `wide_input_gain`) on a
    data directory's validation files; prints the choice and the tables as JSON."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", required=True, help="a run directory of the spectral model")
    parser.add_argument("--data-dir", required=True, help="holds audio/files.parquet")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--per-part", type=int, default=CALIBRATION_LIMITS["full"][0])
    parser.add_argument("--seconds", type=float, default=CALIBRATION_LIMITS["full"][1])
    args = parser.parse_args(argv)
    record = calibrate(args.model, args.data_dir, args.split, args.per_part, args.seconds)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
