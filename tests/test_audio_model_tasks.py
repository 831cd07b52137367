"""The audio model tasks inside a flow on rendered phrases: train, evaluate, examples, a file
super-resolved from the command-line function, and the filter-mismatch table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from prefect import flow

import flows.audio
import tasks.audio_model
from datasets.audio.files import load_audio
from models.audio.calibrate import (
    BUDGETS,
    CALIBRATION_FILE,
    CALIBRATION_LIMITS,
    GAINS,
    PASS_SHARES,
    WIDE_GAINS,
    calibrate,
    choose_budget,
    choose_gain,
    choose_pass_below,
)
from models.audio.config import PRESETS
from models.audio.infer import load_model, low_rate
from tasks.audio_model import (
    evaluate_audio_model,
    filter_mismatch,
    superresolve,
    superresolve_demos,
    superresolve_examples,
    superresolve_file_task,
    train_audio_model,
)

torch.set_num_threads(1)


@flow
def tiny_audio_flow(data_dir: str, example_input: str) -> dict:
    trained = train_audio_model(data_dir, "tiny", 0)
    # Another model size at the same profile (before the runs below, which stay the latest).
    sized = train_audio_model(data_dir, "tiny", 0, steps=2, preset="quick")
    # Fine-tuned from it with the input's band kept, twice: the second finds it trained.
    tuned = [
        train_audio_model(
            data_dir, "tiny", 0, steps=5, init_from=trained["run_dir"], keep_below=0.75, lr=1e-4
        )
        for _ in range(2)
    ]
    evaluated = evaluate_audio_model(data_dir, trained["run_dir"], "tiny")
    examples = superresolve_examples(data_dir, trained["run_dir"], count=1, max_seconds=2.0)
    single = superresolve_file_task(example_input, None, data_dir, None)
    demos = superresolve_demos(data_dir, trained["run_dir"])
    nothing_shipped = superresolve_demos(data_dir, str(Path(data_dir) / "no-such-model"))
    mismatch = filter_mismatch(data_dir, "tiny", 0, ("soxr", "random"))
    return {
        "trained": trained,
        "sized": sized,
        "tuned": tuned,
        "evaluated": evaluated,
        "examples": examples,
        "single": single,
        "demos": demos,
        "nothing_shipped": nothing_shipped,
        "mismatch": mismatch,
    }


def test_tasks_in_a_flow(
    prefect_harness,
    audio_data_dir: Path,
    audio_renders: dict[str, list[Path]],
    monkeypatch,
    capsys,
) -> None:
    data_dir = str(audio_data_dir)
    example = str(audio_renders["test"][0])
    result = tiny_audio_flow(data_dir, example)
    run_dir = Path(result["trained"]["run_dir"])
    assert run_dir == audio_data_dir / "models" / "audio" / "tiny-x4-soxr-seed0"
    assert result["trained"]["steps"] == 30
    sized = Path(result["sized"]["run_dir"])
    assert sized.name == "tiny-quick-x4-soxr-seed0"
    assert load_model(sized, "cpu").config.widths == PRESETS["quick"].widths
    tuned, again = result["tuned"]
    name = "tiny-x4-soxr-seed0-kept0.75-lr0.0001-from-tiny-x4-soxr-seed0"
    assert Path(tuned["run_dir"]).name == name
    assert (tuned["steps"], tuned["reused"], again["reused"]) == (5, False, True)
    assert load_model(tuned["run_dir"], "cpu").config.keep_below == 0.75
    assert not result["trained"]["reused"]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert result["evaluated"]["model_snr_db"] == round(metrics["snr_db"], 3)
    assert result["evaluated"]["spline_lsd"] == round(metrics["baselines"]["spline"]["lsd"], 3)

    (example_out,) = result["examples"]
    assert Path(example_out["png"]).parent == audio_data_dir / "reports"
    assert sf.info(example_out["sr_wav"]).frames == 2 * 16000
    assert sf.info(example_out["lr_wav"]).samplerate == 4000

    single = result["single"]
    assert single["model"] == tuned["run_dir"]  # the latest run when none is named
    assert Path(single["output"]) == audio_data_dir / "reports" / "phrase04-sr.wav"
    assert Path(single["png"]).exists()
    assert single["metrics"]["model"]["snr_db"] > 0

    # The real recordings in the repository, each against itself as the reference.
    demos = {Path(d["input"]).name: d for d in result["demos"]}
    assert set(demos) == {"fillets-cs-speech.flac", "muldjord-armygeddon.flac"}
    for name, demo in demos.items():
        assert Path(demo["output"]).name == f"demo-{Path(name).stem}-sr.wav"
        assert Path(demo["png"]).is_file()
        assert set(demo["metrics"]) == {"model", "spline", "sinc"}
    assert result["nothing_shipped"] == []

    rows = json.loads(Path(result["mismatch"]["table"]).read_text())
    assert {(r["train_filter"], r["eval_filter"]) for r in rows} == {
        (t, e) for t in ("random", "soxr") for e in ("soxr", "cheby", "fir", "none")
    }

    again = tiny_audio_flow(data_dir, example)
    assert again["trained"]["reused"]
    assert again["trained"]["steps"] == 30

    named = audio_data_dir / "named.wav"
    chosen = superresolve(str(audio_renders["valid"][0]), str(named), data_dir, run_dir.name)
    assert chosen["model"] == str(run_dir)
    assert named.exists()

    # The command line with --input: no flow run, no Prefect server, the same file out.
    def no_flow(*args, **kwargs):
        raise AssertionError("--input alone must not start a flow")

    direct = audio_data_dir / "direct.wav"
    monkeypatch.setattr(flows.audio, "run_cli", no_flow)
    flows.audio.main(["--input", example, "--output", str(direct), "--data-dir", data_dir])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["model"] == tuned["run_dir"]
    assert sf.read(str(direct))[0].tolist() == sf.read(single["output"])[0].tolist()


@flow
def bwe_flow(data_dir: str) -> dict:
    trained = train_audio_model(data_dir, "tiny", 0, steps=10, arch="bwe")
    return trained | {"evaluated": evaluate_audio_model(data_dir, trained["run_dir"], "tiny")}


def test_the_spectral_extender_trains_and_evaluates_in_a_flow(
    prefect_harness, audio_data_dir: Path, audio_renders: dict, capsys, monkeypatch
) -> None:
    result = bwe_flow(str(audio_data_dir))
    run_dir = Path(result["run_dir"])
    assert run_dir.name == "bwe-tiny-x4-soxr-seed0"
    config = json.loads((run_dir / "config.json").read_text())
    assert "n_fft" in config
    assert result["evaluated"]["model_snr_db"] > 0
    # Calibrated on the validation files before the stamp: the chosen level is in config.json.
    record = json.loads((run_dir / CALIBRATION_FILE).read_text())
    assert config["high_band_gain"] == record["high_band_gain"] == result["high_band_gain"]
    assert record["high_band_gain"] == choose_gain(record["rows"])
    for key, edge in (("pass_below", "other"), ("pass_below_sharp_edge", "sharp")):
        assert config[key] == record[key] == result[key]
        assert record[key] == choose_pass_below(record["pass_rows"], edge)
    # A level per input replaces the one level only where the validation files say so.
    assert config["high_band_budget"] == record["high_band_budget"] == result["high_band_budget"]
    assert record["high_band_budget"] == choose_budget(
        record["budget_rows"], record["rows"], record["high_band_gain"]
    )
    assert {row["gain"] for row in record["budget_rows"]} == set(BUDGETS)
    assert all(0 <= row["mean_level"] <= 1 for row in record["budget_rows"])
    # Inputs at 8 kHz keep their own band and get their own level of the painted one.
    assert config["wide_input_gain"] == record["wide_input_gain"] == result["wide_input_gain"]
    assert record["wide_input_gain"] == choose_gain(record["wide_rows"])
    assert {row["gain"] for row in record["wide_rows"]} == set(WIDE_GAINS)
    for row in record["wide_rows"]:
        assert row["lsd_over_sinc"] > 0
    assert record["filters"] == ["soxr"]  # the run's own filter, not the random family
    assert {row["pass_below"] for row in record["pass_rows"]} == set(PASS_SHARES)
    # Calibrating again starts from the trained settings, not from the last choice.
    assert calibrate(run_dir, audio_data_dir, "valid", *CALIBRATION_LIMITS["tiny"]) == record
    assert {row["gain"] for row in record["rows"]} == set(GAINS)
    trained_level = [row for row in record["rows"] if row["gain"] == 1.0]
    assert all("2000-3000 Hz" in row["correlation"] for row in trained_level)
    for row in record["rows"]:
        assert row["lsd"] > 0
        assert row["lsd_over_sinc"] > 0
        assert row["snr_over_spline_db"] == pytest.approx(
            row["snr_db"] - row["spline_snr_db"], abs=2e-3
        )

    # The command line can put the painted band back at its trained level for one file.
    example, out = str(audio_renders["valid"][0]), audio_data_dir / "bright.wav"
    argv = ["--input", example, "--output", str(out), "--data-dir", str(audio_data_dir)]
    flows.audio.main([*argv, "--model", str(run_dir), "--high-band-gain", "1"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["high_band_gain"] == 1.0
    # It reports the share this input ran at, which depends on the input's band edge.
    model_config = load_model(run_dir, "cpu").config
    lr = load_audio(example, low_rate(model_config))
    assert printed["pass_below"] == model_config.for_input(lr).pass_below
    assert out.exists()

    # A finished run is reused; a changed calibration recalibrates it without training a step.
    assert bwe_flow(str(audio_data_dir))["reused"]
    (run_dir / CALIBRATION_FILE).unlink()
    monkeypatch.setattr(tasks.audio_model, "calibration_code_version", lambda: "changed")
    again = bwe_flow(str(audio_data_dir))
    assert not again["reused"]
    assert again["steps"] == 10
    assert json.loads((run_dir / CALIBRATION_FILE).read_text()) == record
