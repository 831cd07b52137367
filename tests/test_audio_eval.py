"""Evaluation on whole held-out files against spline and sinc, and the filter-mismatch table."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from datasets.audio.pairs import PairSpec
from models.audio.config import AudioTrainConfig
from models.audio.data import read_pairs_info
from models.audio.evaluate import evaluate_run, main, side_by_side, split_files
from models.audio.mismatch import filter_robustness, mismatch_table, write_filter_pairs
from models.audio.train import train_audio_unet

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained_run(audio_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    config = AudioTrainConfig(preset="tiny", steps=20, batch_size=8, lr=3e-3, log_every=10)
    train_audio_unet(audio_data_dir / "audio" / "pairs", run_dir, config)
    return run_dir


def test_metrics_json_has_the_model_and_both_baselines(
    trained_run: Path,
    audio_data_dir: Path,
) -> None:
    metrics = evaluate_run(trained_run, audio_data_dir, split="test", max_seconds=3.0)
    assert json.loads((trained_run / "metrics.json").read_text()) == metrics
    for block in (metrics, metrics["baselines"]["spline"], metrics["baselines"]["sinc"]):
        assert set(block) >= {"snr_db", "lsd", "lsd_hf"}
    assert metrics["n_files"] == 1
    assert metrics["filter"] == "soxr"
    assert metrics["ratio"] == 4
    assert {r["method"] for r in metrics["per_file"]} == {"model", "spline", "sinc"}
    # The baselines have nothing above the low Nyquist: their high-band LSD exceeds the full.
    spline = metrics["baselines"]["spline"]
    assert spline["lsd_hf"] > spline["lsd"]
    # An untrained-ish model stays near its spline input; the spline is its floor here.
    assert metrics["snr_db"] > spline["snr_db"] - 1.0
    table = side_by_side(metrics)
    assert [row["method"] for row in table] == ["model", "spline", "sinc"]
    assert table[1]["snr_db"] == round(spline["snr_db"], 3)


def test_no_test_files_is_a_clear_error(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the audio data stage first"):
        evaluate_run(trained_run, tmp_path)


def test_filter_pairs_and_the_mismatch_table(
    trained_run: Path,
    audio_data_dir: Path,
    tmp_path: Path,
) -> None:
    spec = PairSpec(hr_rate=16000, ratio=4, filter="none", patch=2048, stride=2048)
    out = write_filter_pairs(audio_data_dir, tmp_path / "pairs-none", spec, ("train",))
    table = pq.read_table(out / "train-00000.parquet")
    assert set(table.column("filter").to_pylist()) == {"none"}
    assert read_pairs_info(out).filter == "none"
    assert table.column_names == ["file_id", "split", "offset", "filter", "hr", "lr"]
    rows = mismatch_table({"soxr": trained_run}, audio_data_dir, max_seconds=2.0)
    assert [(r["train_filter"], r["eval_filter"]) for r in rows] == [
        ("soxr", f) for f in ("soxr", "cheby", "fir", "none")
    ]
    by_filter = {r["eval_filter"]: r for r in rows}
    # Aliased inputs (no filter) are the hardest for the spline as well.
    assert by_filter["none"]["spline_snr_db"] < by_filter["soxr"]["spline_snr_db"]


def test_the_robustness_study_sets_unseen_filters_against_the_trained_one(
    trained_run: Path, audio_data_dir: Path
) -> None:
    study = filter_robustness(trained_run, audio_data_dir, max_seconds=2.0)
    gains = {r["eval_filter"]: r["gain_db"] for r in study["rows"]}
    assert list(gains) == ["soxr", "cheby", "fir", "none", "butter", "ellip"]
    assert study["seen_filters"] == ["soxr"]  # the fixture trains on soxr pairs only
    assert study["seen_gain_db"] == gains["soxr"]
    assert study["worst_unseen_gain_db"] == min(gains["butter"], gains["ellip"])
    assert study["unseen_loss_db"] == pytest.approx(
        gains["soxr"] - study["worst_unseen_gain_db"], abs=1e-3
    )


def test_the_command_line_evaluates_a_share_of_a_split_and_writes_nothing(
    trained_run: Path, audio_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p: p.stat().st_mtime_ns for p in trained_run.rglob("*") if p.is_file()}
    argv = ["--model", str(trained_run), "--data-dir", str(audio_data_dir)]
    main([*argv, "--split", "train", "--every", "2", "--seconds", "1.5"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    train = split_files(audio_data_dir, "train")
    assert printed["n_files"] == len(train[::2])
    assert printed["filter"] == "soxr"
    assert printed["baselines"]["sinc"]["lsd"] > printed["lsd"] - 10  # a number, per method
    assert sum(part["n_files"] for part in printed["by_source"].values()) == printed["n_files"]
    with pytest.raises(SystemExit):
        main([*argv, "--split", "train", "--prefix", "no-such-part/"])
    assert "no train files whose path starts with 'no-such-part/'" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in trained_run.rglob("*") if p.is_file()} == before


def test_inputs_in_a_wider_container_are_routed_by_their_band_edge(
    trained_run: Path, audio_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """8 kHz inputs saved at 44.1 kHz score as the 8 kHz inputs do (their band kept, not the
    model's guess from under 2 kHz in its place); the baselines are those of the inputs."""
    argv = ["--model", str(trained_run), "--data-dir", str(audio_data_dir), "--seconds", "1.5"]

    def run(*extra: str) -> dict:
        main([*argv, "--input-rate", "8000", *extra])
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    direct, contained = run(), run("--container-rate", "44100")
    assert contained["container_rate"] == 44100
    assert contained["baselines"] == direct["baselines"]
    assert contained["snr_db"] == pytest.approx(direct["snr_db"], abs=0.5)
    assert contained["snr_db"] > direct["baselines"]["spline"]["snr_db"]
    with pytest.raises(SystemExit):
        run("--container-rate", "4000")
    assert "--container-rate 4000: under the inputs' rate" in capsys.readouterr().err
