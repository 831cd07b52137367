"""Scoring on music no training file holds (`models.audio.foreign`): other composers' pieces
from music21's corpus rendered with FluidSynth, as the piano and with their own instruments;
a piece that cannot be rendered is rejected by name and the rest go on."""

from __future__ import annotations

import json

import torch

from models.audio.config import GatedConfig, preset
from models.audio.foreign import main, score_foreign
from models.audio.gated import Gate, GatedExtender
from models.checkpoint import save_model

TINY = {"patch": 2048, "hr_rate": 16000, "ratio": 4}


def routed_model(directory, open_gate: bool) -> str:
    """A tiny untrained gated model whose gate sends every input to the U-Net or to none."""
    config = GatedConfig(
        spectral=preset("bwe-tiny", **TINY), unet=preset("tiny", **TINY), route_above=0.5
    )
    model = GatedExtender(config, torch.Generator().manual_seed(0))
    n = config.features
    model.set_gate(Gate((0.0,) * n, (1.0,) * n, (0.0,) * n, 30.0 if open_gate else -30.0))
    save_model(directory, model, config)
    return str(directory)


def test_renders_scores_and_routes_and_rejects_what_cannot_be_read(tmp_path):
    shut, opened = routed_model(tmp_path / "shut", False), routed_model(tmp_path / "open", True)
    pieces = ("mozart/k80/movement1", "chopin/mazurka06-2", "nobody/no_such_piece")
    result = score_foreign([shut, opened], tmp_path / "out", seconds=3.0, pieces=pieces)
    assert list(result["rejected"]) == ["nobody/no_such_piece"]
    # The quartet names string instruments: rendered twice; the mazurka only as the piano.
    kinds = {(row["piece"], row["render"]) for row in result["rows"]}
    assert kinds == {
        ("mozart/k80/movement1", "piano"),
        ("mozart/k80/movement1", "own"),
        ("chopin/mazurka06-2", "piano"),
    }
    assert len(result["rows"]) == 6
    for row in result["rows"]:
        assert row["routed_to"] == ("unet" if row["model_dir"] == opened else "spectral")
        for method in ("model", "spline", "sinc"):
            assert set(row[method]) == {"snr_db", "lsd", "lsd_hf"}
    summary = {(entry["model_dir"], entry["render"]): entry for entry in result["summary"]}
    assert summary[(shut, "piano")]["n_files"] == 2
    assert summary[(shut, "piano")]["to_unet"] == 0.0
    assert summary[(opened, "own")]["to_unet"] == 1.0
    # The renders are made once: a second run reads them back.
    wavs = sorted((tmp_path / "out" / "wav").iterdir())
    stamps = [path.stat().st_mtime_ns for path in wavs]
    again = score_foreign([shut], tmp_path / "out", seconds=3.0, pieces=pieces[:1])
    assert [path.stat().st_mtime_ns for path in wavs] == stamps
    assert again["rows"][0]["model"] == result["rows"][0]["model"]  # the same numbers


def test_the_command_line_writes_the_results(tmp_path, capsys):
    model = routed_model(tmp_path / "model", False)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["route_above"] == 0.5
    main(["--model", model, "--out-dir", str(tmp_path / "out"), "--seconds", "2"])
    printed = json.loads(capsys.readouterr().out)
    written = json.loads((tmp_path / "out" / "foreign.json").read_text())
    assert printed["summary"] == written["summary"]
    assert {entry["render"] for entry in written["summary"]} == {"piano", "own"}
