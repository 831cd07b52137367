"""Shipping a trained run as a pretrained model, and using one: export, card, the size limit,
replacing only better models, the flow that builds them, generation with nothing else."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from audio_files import write_mix_corpus
from prefect import flow
from symbolic_corpus import VOCAB, write_symbolic
from test_jsb import write_jsb

import flows.pretrained
import models.pretrained as pretrained
from datasets.io import write_bytes_atomic
from datasets.symbolic.tokenizer import VOCAB_FILE, Vocab
from flows.audio import AudioParams, audio_flow
from flows.cli import run_cli
from flows.pretrained import PretrainedParams, command_line, gated_superres, pretrained_flow
from flows.symbolic import SymbolicParams, symbolic_flow
from models.audio.gate import GATE_FILE
from models.audio.gated import GatedExtender
from models.audio.infer import load_model
from models.checkpoint import CONFIG_FILE, MODEL_FILE, load_config
from models.pretrained import ModelCard, export_pretrained, improves_on_shipped
from models.symbolic.config import PROFILES, MusicConfig, profile_configs
from models.symbolic.musicality_study import StudyConfig
from models.symbolic.run import evaluate_run
from models.symbolic.train import METRICS_PARQUET, train
from models.symbolic.transformer import MusicTransformer
from tasks.audio_model import gate_audio_models
from tasks.pretrained import export_music21_model, export_superres_model
from tasks.symbolic_model import run_configs

torch.set_num_threads(1)

CARD = ModelCard(
    name="tiny",
    summary="A tiny test model.",
    data="Three made-up progressions.",
    command="python -m flows.pretrained --names tiny",
    steps=60,
    wall_time="1 min of training",
    hardware="a test machine",
    metrics={"test_nll": 1.25, "parameters": 1234},
    notes=["Only for tests."],
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    symbolic = write_symbolic(tmp_path_factory.mktemp("pretrained"))
    run_dir = symbolic.parent / "models" / "music" / "tiny"
    model_config, train_config = profile_configs("tiny", VOCAB.size, seed=0)
    tokens = symbolic / "tokens"
    train(run_dir, tokens / "train.parquet", tokens / "valid.parquet", model_config, train_config)
    return run_dir


def test_an_exported_model_is_self_contained_with_its_card(trained, tmp_path):
    out = export_pretrained(
        trained, tmp_path / "tiny", CARD, {"test_nll": 1.25}, {VOCAB_FILE: VOCAB.to_json()}
    )
    names = {path.name for path in out.iterdir()}
    assert names == {MODEL_FILE, CONFIG_FILE, VOCAB_FILE, "metrics.json", "README.md"}
    card = (out / "README.md").read_text()
    for text in (CARD.command, "steps: 60", "wall time: 1 min", "hardware: a test machine"):
        assert text in card
    assert "| test_nll | 1.2500 |" in card
    assert json.loads((out / "metrics.json").read_text()) == {"test_nll": 1.25}
    loaded = MusicTransformer.load(out)  # weights and config fit, no pickle
    assert loaded.num_parameters() == MusicTransformer.load(trained).num_parameters()
    assert not list(tmp_path.glob(".tiny.*"))  # no pending or retired directory left behind


def test_weights_over_the_limit_are_refused_and_the_shipped_model_kept(
    trained, tmp_path, monkeypatch
):
    out = export_pretrained(trained, tmp_path / "tiny", CARD, {"test_nll": 1.25})
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    monkeypatch.setattr(pretrained, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(ValueError, match=r"model\.safetensors: .* MB of weights, over the"):
        export_pretrained(trained, out, CARD, {"test_nll": 1.0})
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_only_a_better_number_replaces_a_shipped_model(trained, tmp_path):
    out = tmp_path / "tiny"
    assert improves_on_shipped(out, "test_nll", 2.0)  # nothing shipped yet
    export_pretrained(trained, out, CARD, {"test_nll": 1.25})
    assert improves_on_shipped(out, "test_nll", 1.2)
    assert not improves_on_shipped(out, "test_nll", 1.25)
    assert not improves_on_shipped(out, "test_nll", 1.3)


def test_generation_from_a_model_directory_needs_nothing_else(
    prefect_harness, trained, tmp_path, capsys
):
    """`--stages generate --model DIR` with an empty data directory: the model directory's own
    vocabulary, a built-in prompt, nothing trained; MIDI, audio and piano roll written."""
    model_dir = export_pretrained(
        trained, tmp_path / "tiny", CARD, {}, {VOCAB_FILE: VOCAB.to_json()}
    )
    data_dir = tmp_path / "empty"
    argv = ["--stages", "generate", "--model", str(model_dir), "--data-dir", str(data_dir)]
    run_cli(symbolic_flow, SymbolicParams, [*argv, "--length", "40", "--prompt-bars", "2"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    generated = result["generated"]
    for key in ("midi", "wav", "png"):
        assert Path(generated[key]).is_file()
    assert generated["notes"] > generated["prompt_notes"]
    assert sorted(path.name for path in data_dir.iterdir()) == ["reports"]


def test_the_pretrained_flow_builds_exports_and_keeps_the_better(prefect_harness, tmp_path):
    """The JSB model as `make pretrained` builds it (at the tiny profile): trained by the JSB
    benchmark task, exported with its serialization and card; a second build with the same
    numbers leaves the shipped model alone, unless forced."""
    params = PretrainedParams(
        names=["jsb"],
        profile="tiny",
        data_dir=str(tmp_path / "data"),
        out_dir=str(tmp_path / "shipped"),
        jsb=str(write_jsb(tmp_path / "jsb.json")),
    )
    first = pretrained_flow(params)["jsb"]
    assert first["exported"]
    shipped = tmp_path / "shipped" / "jsb"
    metrics = json.loads((shipped / "metrics.json").read_text())
    assert metrics["valid_nll"] == first["valid_nll"]
    assert metrics["pieces"]["train"] > 4  # the training chorales in the keys they fit
    # Two stages, the second from the first's weights: the card counts both.
    assert [stage["steps"] for stage in metrics["stages"]] == [60, 60]
    assert metrics["steps"] == 120
    assert "- steps: 120" in (shipped / "README.md").read_text()
    assert json.loads((shipped / VOCAB_FILE).read_text())["size"] == 132
    assert (
        "python -m flows.pretrained --names jsb --seed 0 --profile tiny"
        in (shipped / "README.md").read_text()
    )
    card_before = (shipped / "README.md").stat().st_mtime_ns
    assert not pretrained_flow(params)["jsb"]["exported"]
    assert (shipped / "README.md").stat().st_mtime_ns == card_before
    assert pretrained_flow(params.model_copy(update={"force": True}))["jsb"]["exported"]


def test_the_generate_stage_also_continues_the_prompt_with_the_shipped_model(
    prefect_harness, trained, tmp_path, capsys
):
    """`make run`'s symbolic flow continues the prompt with the model it trains and, beside
    it, with the shipped model; a shipped model that is not there leaves the run's alone."""
    shipped = export_pretrained(
        trained, tmp_path / "shipped-tiny", CARD, {}, {VOCAB_FILE: VOCAB.to_json()}
    )
    data_dir = tmp_path / "data"
    write_symbolic(data_dir)
    argv = ["--profile", "tiny", "--data-dir", str(data_dir), "--stages", "train", "generate"]
    argv += ["--length", "30", "--prompt-bars", "2"]
    run_cli(symbolic_flow, SymbolicParams, [*argv, "--shipped-model", str(shipped)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    own, beside = result["generated"], result["generated_shipped"]
    assert Path(own["midi"]).name == "tiny-seed0-pachelbel-seed0.mid"
    assert Path(beside["midi"]).name == "shipped-tiny-pachelbel-seed0.mid"
    for key in ("midi", "wav", "png"):
        assert Path(beside[key]).is_file()
    run_cli(symbolic_flow, SymbolicParams, [*argv, "--shipped-model", str(tmp_path / "none")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["generated"]
    assert not result["generated_shipped"]


def test_fine_tuning_starts_from_the_shipped_weights(trained, tmp_path):
    """`init_from` starts a run from a model directory's weights: its first logged loss is the
    trained model's, far below a random init's on the same data and settings."""
    model_dir = export_pretrained(trained, tmp_path / "shipped", CARD, {})
    tokens = trained.parents[2] / "symbolic" / "tokens"
    splits = tokens / "train.parquet", tokens / "valid.parquet"
    model_config = load_config(model_dir, MusicConfig)
    fresh = replace(PROFILES["tiny"], steps=10, log_every=5, checkpoint_every=10)
    tuned = replace(fresh, init_from=str(model_dir))
    train(tmp_path / "fresh", *splits, model_config, fresh)
    train(tmp_path / "tuned", *splits, model_config, tuned)

    def first_loss(run: str) -> float:
        return pq.read_table(tmp_path / run / METRICS_PARQUET).column("train_loss")[0].as_py()

    assert first_loss("tuned") < first_loss("fresh") - 1.0


def test_fine_tuning_refuses_another_vocabulary(trained, tmp_path):
    model_dir = export_pretrained(
        trained, tmp_path / "shipped", CARD, {}, {VOCAB_FILE: VOCAB.to_json()}
    )
    other = Vocab(steps_per_beat=4, max_duration=32, max_shift=16)
    with pytest.raises(ValueError, match=r"vocab\.json: the model to fine-tune reads another"):
        run_configs(other, "tiny", 0, str(model_dir))
    model_config, train_config = run_configs(VOCAB, "tiny", 0, str(model_dir))
    assert model_config == load_config(model_dir, MusicConfig)
    assert train_config.init_from == str(model_dir)


def test_the_music21_export_carries_the_vocabulary_and_the_musicality_study(
    prefect_harness, trained, tmp_path
):
    """The general model's export from a symbolic flow's result: its vocabulary, NLL beside
    the baselines and the held-out prompts' musicality in metrics.json and on the card; a run
    whose study measured nothing is refused."""
    tokens = trained.parents[2] / "symbolic" / "tokens"
    write_bytes_atomic(trained / VOCAB_FILE, VOCAB.to_json().encode())
    result = {"run_dir": str(trained), "n_rejected": 1}
    result |= {f"pieces_{split}": n for split, n in {"train": 6, "valid": 2, "test": 2}.items()}

    @flow
    def export(study: StudyConfig) -> dict:
        evaluate_run(trained, tokens, vocab=VOCAB, study=study)
        return export_music21_model(result, str(tmp_path / "music21"), "make pretrained")

    assert export(StudyConfig(n_prompts=2, prompt_bars=2, continuation_bars=3))["exported"]
    shipped = tmp_path / "music21"
    metrics = json.loads((shipped / "metrics.json").read_text())
    assert metrics["musicality"]["n_prompts"] == 2
    assert set(metrics["baselines_test_nll"]) == {"ngram"}
    assert Vocab.from_json((shipped / VOCAB_FILE).read_text()) == VOCAB
    card = (shipped / "README.md").read_text()
    assert "in prompt key (model / real)" in card
    assert "1 files rejected" in card
    with pytest.raises(ValueError, match="no test piece long enough"):
        export(StudyConfig(prompt_bars=4, continuation_bars=8))


def test_a_kill_between_the_renames_loses_no_shipped_model(trained, tmp_path, monkeypatch):
    """Killed after the shipped directory was set aside and before the new one moved in: the
    next export puts the old one back first, even when that export is then refused."""
    out = export_pretrained(trained, tmp_path / "tiny", CARD, {"test_nll": 1.25})
    out.rename(tmp_path / ".tiny.old")  # where the kill left it
    monkeypatch.setattr(pretrained, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(ValueError, match="over the"):
        export_pretrained(trained, out, CARD, {"test_nll": 1.0})
    assert json.loads((out / "metrics.json").read_text()) == {"test_nll": 1.25}
    assert not (tmp_path / ".tiny.old").exists()


def spectral_mix_params(data_dir: Path, mix: str, stages: list[str]) -> AudioParams:
    """The pretrained flow's spectral model at the tiny profile on a small mix of corpora."""
    return AudioParams(
        data_dir=str(data_dir),
        corpus=mix,
        profile="tiny",
        stages=stages,
        patch=2048,
        filter="random",
        arch="bwe",
        valid_fraction=0.25,
        test_fraction=0.25,
        split_by="dir",
    )


def test_the_superres_export_reports_each_part_and_unseen_filters(prefect_harness, tmp_path):
    """The super-resolution model as the pretrained flow builds it, on a mix of two small
    corpora at the tiny profile: the spectral model, a filter per file, evaluated per part;
    the export carries the figures of every part and the robustness study on its card."""
    mix = write_mix_corpus(tmp_path / "corpus")
    params = spectral_mix_params(tmp_path / "data", mix, ["data", "train", "evaluate"])

    @flow
    def build() -> dict:
        result = audio_flow(params).model_dump(mode="json")
        return export_superres_model(result, mix, str(tmp_path / "shipped"), "make pretrained")

    assert build()["exported"]
    shipped = tmp_path / "shipped"
    metrics = json.loads((shipped / "metrics.json").read_text())
    files = pq.read_table(tmp_path / "data" / "audio" / "files.parquet").to_pylist()
    tested = {row["path"].split("/")[0] for row in files if row["split"] == "test"}
    assert set(metrics["by_source"]) == tested
    for row in [metrics, *metrics["by_source"].values()]:
        assert {"lsd", "sinc_lsd", "spline_lsd", "snr_db", "spline_snr_db"} <= set(row)
    # The export's headline weighs the parts alike, whatever their number of files.
    part_lsds = [part["lsd"] for part in metrics["by_source"].values()]
    assert metrics["lsd_parts_mean"] == pytest.approx(sum(part_lsds) / len(part_lsds), abs=1e-3)
    # Its headline counts a part's LSD only where the SNR holds the spline's.
    credited = [
        part["lsd"] if part["snr_db"] >= part["spline_snr_db"] else part["sinc_lsd"]
        for part in metrics["by_source"].values()
    ]
    assert metrics["lsd_parts_mean_at_spline_snr"] == pytest.approx(
        sum(credited) / len(credited), abs=1e-3
    )
    # And on the same test files at 8 kHz, where the input's own band is kept.
    wide = metrics["wide_input"]
    assert wide["input_rate"] == 8000
    assert set(wide["by_source"]) == tested
    for name, row in [("all", wide), *wide["by_source"].items()]:
        assert {"lsd", "sinc_lsd", "spline_lsd", "snr_db", "spline_snr_db"} <= set(row)
        at_4_khz = metrics if name == "all" else metrics["by_source"][name]
        assert row["snr_db"] > at_4_khz["snr_db"]  # far more of the signal is given
    robustness = metrics["robustness"]
    assert robustness["seen_filters"] == ["soxr", "cheby", "fir", "none"]
    assert [r["eval_filter"] for r in robustness["rows"]][-2:] == ["butter", "ellip"]
    assert metrics["steps"] == 30
    assert metrics["train_seconds"] > 0
    assert json.loads((shipped / CONFIG_FILE).read_text())["n_fft"] > 0  # the spectral model
    assert json.loads((shipped / "train.json").read_text())["pairs"]["filter"] == "random"
    card = (shipped / "README.md").read_text()
    assert "unseen filters" in card
    assert "all: test LSD (model / sinc / spline)" in card
    assert "at 8 kHz inputs: test LSD" in card
    # The headline, the first row of the card's metrics, is what the next export must beat.
    assert card.index("| lsd_parts_mean_at_spline_snr |") < card.index("| lsd_parts_mean |")


def test_a_gated_superres_export_names_its_networks_runs_and_ships_its_gate(
    prefect_harness, tmp_path, monkeypatch
):
    """The pretrained flow's gated recipe at the tiny profile: a spectral run, the U-Net's two
    stages, the gate fitted between them (reused when asked again), the gated model evaluated
    and exported with every run's steps, the spectral model's calibrated settings and the
    gate's record."""
    mix = write_mix_corpus(tmp_path / "corpus")
    params = spectral_mix_params(tmp_path / "data", mix, ["data", "train"])
    # The U-Net's first stage trains on the renders; this mix's parts are speech and music.
    first, *rest = flows.pretrained.SUPERRES_UNET_STAGES
    stages = ({**first, "train_parts": ["music"]}, *rest)
    monkeypatch.setattr(flows.pretrained, "SUPERRES_UNET_STAGES", stages)

    @flow
    def build() -> dict:
        spectral = audio_flow(params).model_dump(mode="json")
        result = gated_superres(PretrainedParams(profile="tiny"), params, spectral)
        unet = result["network_runs"][-1]
        assert gate_audio_models(params.data_dir, spectral["run_dir"], unet)["reused"]
        return export_superres_model(result, mix, str(tmp_path / "shipped"), "make pretrained")

    assert build()["exported"]
    shipped = tmp_path / "shipped"
    metrics = json.loads((shipped / "metrics.json").read_text())
    assert metrics["steps"] == 90
    runs = list(metrics["steps_per_run"])
    assert runs[0].startswith("bwe-")  # the spectral run, then the U-Net's two stages
    assert "narrow" in runs[1]
    assert runs[2].endswith("-from-" + runs[1])
    assert metrics["high_band_gain"] is not None  # the spectral model's calibrated settings
    loaded = load_model(shipped, "cpu")
    assert isinstance(loaded, GatedExtender)
    record = json.loads((shipped / GATE_FILE).read_text())
    assert "bias" in record["gate"]
    assert loaded.config.route_above == record["route"]["threshold"]
    card = (shipped / "README.md").read_text()
    assert "a gate that sends a whole input to the U-Net" in card
    assert f"is above {record['route']['threshold']}, the highest threshold" in card
    assert "the steps above are their sum" in card


def test_the_card_command_says_how_many_processes_trained_the_model() -> None:
    one = PretrainedParams()
    two = PretrainedParams(nproc_per_node=2)
    assert command_line(one, "superres-x4-16k") == (
        "python -m flows.pretrained --names superres-x4-16k --seed 0"
    )
    assert command_line(two, "superres-x4-16k").endswith("--nproc-per-node 2 --nnodes 1")
    spectral = PretrainedParams(superres="spectral")
    assert command_line(spectral, "superres-x4-16k").endswith("--seed 0 --superres spectral")
    assert "--superres" not in command_line(spectral, "music21")
    assert "--nproc-per-node" not in command_line(two, "jsb")  # JSB trains in one process
