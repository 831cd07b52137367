"""Evaluate super-resolution on whole held-out files against the classical reconstructions.

For every file of a split: `lr = degrade(hr)` with the filter the model was trained on, then the
model (`superresolve`), the cubic spline and the band-limited (sinc) projection each rebuild
`hr` from `lr`; SNR, LSD and high-band LSD are computed per file and averaged over files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from datasets.audio.dataset import corpus_part, read_files_table
from datasets.audio.files import write_wav
from datasets.audio.pairs import degrade
from datasets.audio.signals import FILTERS, sinc_upsample, spline_upsample
from datasets.io import write_json_atomic
from models.audio.infer import (
    WIDE_RATIO,
    AudioModel,
    fit_length,
    load_model,
    low_rate,
    spectrogram_png,
    superresolve,
    superresolve_audio,
    superresolve_wide,
)
from models.audio.metrics import band_energy_shares, evaluate_pair
from models.audio.train import TRAIN_JSON, trained_world_size

METHODS = ("model", "spline", "sinc")
METRICS = ("snr_db", "lsd", "lsd_hf")


def split_files(data_dir: str | Path, split: str, max_files: int | None = None) -> list[dict]:
    """Rows of `audio/files.parquet` in `split`, by file_id (the first `max_files`)."""
    rows = sorted(
        (r for r in read_files_table(data_dir).to_pylist() if r["split"] == split),
        key=lambda r: r["file_id"],
    )
    return rows[:max_files] if max_files is not None else rows


def read_hr(data_dir: str | Path, row: dict, max_seconds: float | None = None) -> np.ndarray:
    """A file's high-res signal, cut to its first `max_seconds` when given."""
    hr, rate = sf.read(str(Path(data_dir) / row["hr_path"]), dtype="float32")
    if max_seconds is not None:
        hr = hr[: int(max_seconds * rate)]
    return hr


def reconstruct(
    model: AudioModel,
    lr: np.ndarray,
    n: int,
    input_ratio: int | None = None,
    container_rate: int | None = None,
) -> dict[str, np.ndarray]:
    """The three reconstructions of `n` high-rate samples from `lr`: an input at the model's
    rate, or with `input_ratio` (below the model's ratio) a wide input at hr_rate / input_ratio
    (`superresolve_wide`). With `container_rate` the model sees `lr` resampled (soxr) up to that
    rate, as a file saved there, and routes it by its band (`superresolve_audio`)."""
    ratio = input_ratio or model.config.ratio
    rate = model.config.hr_rate // ratio
    if container_rate is not None:
        container = soxr.resample(lr, rate, container_rate, "HQ")
        estimate = superresolve_audio(model, container, container_rate)[0]
    elif input_ratio is None:
        estimate = superresolve(model, lr)
    else:
        estimate = superresolve_wide(model, lr, rate)
    return {
        "model": fit_length(estimate, n),
        "spline": spline_upsample(lr, ratio, n),
        "sinc": sinc_upsample(lr, ratio, n),
    }


def evaluate_files(
    model: AudioModel,
    data_dir: str | Path,
    files: list[dict],
    filter: str,
    bits: int | None = None,
    max_seconds: float | None = None,
    band_edges: list[float] | None = None,
    input_ratio: int | None = None,
    container_rate: int | None = None,
) -> list[dict[str, Any]]:
    """One row per (file, method): file_id, method, filter, snr_db, lsd, lsd_hf; with
    `band_edges` (Hz) also `band_errors`, the error energy per band as a share of the file's
    energy, and one row per file of method "signal" with the file's own shares. With
    `input_ratio` the inputs are wide ones at hr_rate / input_ratio, with `container_rate`
    resampled up to that rate (`reconstruct`)."""
    ratio, rate = input_ratio or model.config.ratio, model.config.hr_rate
    rows = []
    for row in files:
        hr = read_hr(data_dir, row, max_seconds)
        lr = degrade(hr, ratio, filter, bits)
        keys = {"file_id": row["file_id"], "filter": filter}
        if band_edges is not None:
            own = band_energy_shares(hr, hr, rate, band_edges)
            rows.append({**keys, "method": "signal", "band_errors": own})
        for method, estimate in reconstruct(
            model, lr, len(hr), input_ratio, container_rate
        ).items():
            metrics = evaluate_pair(hr, estimate, ratio)
            if band_edges is not None:
                metrics["band_errors"] = band_energy_shares(hr, estimate - hr, rate, band_edges)
            rows.append({**keys, "method": method, **metrics})
    return rows


def by_source(rows: list[dict[str, Any]], files: list[dict]) -> dict[str, Any]:
    """`summarize` per part of a mixed corpus (`corpus_part`)."""
    source = {row["file_id"]: corpus_part(row["path"]) for row in files}
    return {
        name: summarize([r for r in rows if source[r["file_id"]] == name])
        for name in sorted(set(source.values()))
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Averages over files: the model's metrics at the top, the baselines under `baselines`."""

    def mean_of(method: str) -> dict[str, float]:
        chosen = [r for r in rows if r["method"] == method]
        return {metric: float(np.mean([r[metric] for r in chosen])) for metric in METRICS}

    return {
        **mean_of("model"),
        "baselines": {"spline": mean_of("spline"), "sinc": mean_of("sinc")},
        "n_files": len({r["file_id"] for r in rows}),
    }


def side_by_side(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary as table rows: one per method, columns snr_db, lsd, lsd_hf."""
    sources = {"model": summary, **summary["baselines"]}
    return [
        {"method": name, **{m: round(sources[name][m], 3) for m in METRICS}} for name in METHODS
    ]


def run_pairs_info(run_dir: str | Path) -> dict[str, Any]:
    """The pairs-dataset metadata a run was trained on (written by `train_audio_unet`)."""
    return json.loads((Path(run_dir) / TRAIN_JSON).read_text())["pairs"]


def eval_filter(train_filter: str) -> str:
    """The filter of the evaluation inputs: the training one, soxr for a `random` model."""
    return train_filter if train_filter in FILTERS else "soxr"


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path,
    split: str = "test",
    max_files: int | None = None,
    max_seconds: float | None = None,
    sources: bool = False,
) -> dict[str, Any]:
    """Evaluate the model in `run_dir` on the whole files of `split`; write `metrics.json`.
    `sources` (a mixed corpus) adds the summary of each part (`by_source`)."""
    run_dir = Path(run_dir)
    model = load_model(run_dir)
    pairs = run_pairs_info(run_dir)
    files = split_files(data_dir, split, max_files)
    if not files:
        raise ValueError(f"{data_dir}: no {split} files in audio/files.parquet to evaluate on")
    filter = eval_filter(pairs["filter"])
    rows = evaluate_files(model, data_dir, files, filter, pairs["bits"], max_seconds)
    metrics = {
        **summarize(rows),
        "split": split,
        "ratio": model.config.ratio,
        "hr_rate": model.config.hr_rate,
        "filter": filter,
        "max_seconds": max_seconds,
        "world_size": trained_world_size(run_dir),
        "per_file": rows,
    }
    if sources:
        metrics["by_source"] = by_source(rows, files)
    write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics


def evaluate_wide_inputs(
    run_dir: str | Path,
    data_dir: str | Path,
    split: str = "test",
    max_files: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """The model in `run_dir` on wide inputs: `split`'s files (the first `max_files`, their
    first `max_seconds`) at hr_rate / `WIDE_RATIO` (`superresolve_wide`), made with the
    evaluation filter: the summary, per part, beside the spline and sinc of those inputs."""
    model = load_model(run_dir)
    files = split_files(data_dir, split, max_files)
    filter = eval_filter(run_pairs_info(run_dir)["filter"])
    rows = evaluate_files(model, data_dir, files, filter, None, max_seconds, None, WIDE_RATIO)
    return {
        **summarize(rows),
        "input_rate": model.config.hr_rate // WIDE_RATIO,
        "filter": filter,
        "max_seconds": max_seconds,
        "by_source": by_source(rows, files),
    }


def write_examples(
    run_dir: str | Path,
    data_dir: str | Path,
    reports_dir: str | Path,
    count: int = 2,
    split: str = "test",
    max_seconds: float | None = 10.0,
) -> list[dict[str, Any]]:
    """Super-resolve the first `count` files of `split`: per file the low-res input (at its
    rate), the model's output and a spectrogram PNG with the reference, and the SNR/LSD."""
    model = load_model(run_dir)
    config = model.config
    filter = eval_filter(run_pairs_info(run_dir)["filter"])
    stem_prefix = Path(run_dir).name
    examples = []
    for row in split_files(data_dir, split, count):
        hr = read_hr(data_dir, row, max_seconds)
        lr = degrade(hr, config.ratio, filter)
        estimate = fit_length(superresolve(model, lr), len(hr))
        stem = Path(reports_dir) / f"{stem_prefix}-{row['file_id']}"
        write_wav(f"{stem}-lr.wav", lr, low_rate(config))
        write_wav(f"{stem}-sr.wav", estimate, config.hr_rate)
        png = spectrogram_png(
            f"{stem}-sr.png", lr, estimate, config.hr_rate, config.ratio, hr, row["file_id"]
        )
        examples.append(
            {
                "file_id": row["file_id"],
                "lr_wav": f"{stem}-lr.wav",
                "sr_wav": f"{stem}-sr.wav",
                "png": str(png),
                **evaluate_pair(hr, estimate, config.ratio),
            }
        )
    return examples


def main(argv: list[str] | None = None) -> None:
    """Evaluate a model on a split of a data directory without writing anything: the files
    whose path starts with `--prefix` (a part of a mix, a speaker), every `--every`-th of them,
    their first `--seconds`; prints the summary, per part, as JSON."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", required=True, help="a run or shipped model directory")
    parser.add_argument("--data-dir", required=True, help="holds audio/files.parquet")
    parser.add_argument("--split", default="test")
    parser.add_argument("--prefix", default="", help="keep files whose path starts with this")
    parser.add_argument("--every", type=int, default=1, help="keep every n-th file (by id)")
    parser.add_argument("--seconds", type=float, default=None, help="first seconds of each")
    parser.add_argument(
        "--filter", default=None, help="default: the run's training filter (soxr for random)"
    )
    parser.add_argument(
        "--input-rate",
        type=int,
        default=None,
        metavar="HZ",
        help="inputs at this rate (hr_rate over an integer, above the model's input rate: 8000 "
        "for the 4 -> 16 kHz model), their own band kept; default: the model's input rate",
    )
    parser.add_argument(
        "--container-rate",
        type=int,
        default=None,
        metavar="HZ",
        help="resample the inputs (at --input-rate) up to this rate before the model sees them, "
        "as a file saved there, and route them by their band edge as --input does (44100: an "
        "8 kHz recording in a CD-rate file)",
    )
    parser.add_argument(
        "--bands",
        type=float,
        nargs="*",
        default=None,
        metavar="HZ",
        help="also print each method's error energy per band between these edges (Hz), as a "
        "share of the signal's energy, beside the signal's own shares",
    )
    args = parser.parse_args(argv)
    model = load_model(args.model)
    rows = [r for r in split_files(args.data_dir, args.split) if r["path"].startswith(args.prefix)]
    files = rows[:: args.every]
    if not files:
        parser.error(
            f"{args.data_dir}: no {args.split} files whose path starts with {args.prefix!r}"
        )
    trained_on = Path(args.model) / TRAIN_JSON  # a run's and a shipped model's; else soxr
    filter = args.filter or (
        eval_filter(run_pairs_info(args.model)["filter"]) if trained_on.is_file() else "soxr"
    )
    edges = None
    if args.bands is not None:
        edges = [0.0, *sorted(args.bands), model.config.hr_rate / 2 + 1]
    input_ratio = None
    if args.input_rate is not None:
        input_ratio = model.config.hr_rate // args.input_rate
        if (
            model.config.hr_rate % args.input_rate
            or not low_rate(model.config) < args.input_rate < model.config.hr_rate
        ):
            parser.error(
                f"--input-rate {args.input_rate}: not {model.config.hr_rate} Hz over an integer "
                f"above the model's input rate {low_rate(model.config)} Hz"
            )
    if args.container_rate is not None and args.container_rate < (
        args.input_rate or low_rate(model.config)
    ):
        parser.error(f"--container-rate {args.container_rate}: under the inputs' rate")
    evaluated = evaluate_files(
        model,
        args.data_dir,
        files,
        filter,
        None,
        args.seconds,
        edges,
        input_ratio,
        args.container_rate,
    )
    measured = [r for r in evaluated if r["method"] != "signal"]
    summary = {**summarize(measured), "by_source": by_source(measured, files)}
    if edges is not None:
        summary["bands"] = {"edges_hz": edges, **mean_band_errors(evaluated)}
    print(
        json.dumps(
            {
                "split": args.split,
                "prefix": args.prefix,
                "filter": filter,
                "input_rate": args.input_rate or low_rate(model.config),
                "container_rate": args.container_rate,
                **summary,
            }
        )
    )


def mean_band_errors(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per method (and "signal"), the `band_errors` of `evaluate_files` averaged over files."""
    methods = dict.fromkeys(r["method"] for r in rows)
    return {
        method: np.mean([r["band_errors"] for r in rows if r["method"] == method], axis=0)
        .round(5)
        .tolist()
        for method in methods
    }


if __name__ == "__main__":
    main()
