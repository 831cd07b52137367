"""The models shipped in models/pretrained/: complete, small, loadable without pickle, and
scoring what their cards say with the documented command."""

from __future__ import annotations

import json
from pathlib import Path

import music21
import pytest
import soundfile as sf
import torch

from datasets.audio.files import load_audio, write_wav
from datasets.audio.signals import spline_upsample
from flows.cli import run_cli
from flows.symbolic import SymbolicParams, symbolic_flow
from models.audio.bwe import BandwidthExtender
from models.audio.calibrate import (
    CALIBRATED_SETTINGS,
    CALIBRATION_FILE,
    choose_budget,
    choose_gain,
    choose_pass_below,
)
from models.audio.gate import GATE_FILE, route_threshold
from models.audio.gated import GatedExtender
from models.audio.infer import load_model, superresolve_file
from models.audio.metrics import snr_db
from models.checkpoint import CONFIG_FILE, MODEL_FILE
from models.pretrained import CARD_FILE, MAX_MODEL_BYTES, METRICS_FILE
from models.symbolic.musicality_study import midi_prompt_study
from models.symbolic.transformer import MusicTransformer
from tasks.audio_model import DEMO_RECORDINGS

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "pretrained"
JSB = REPO.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json"
NAMES = ["jsb", "music21"]  # the music models


@pytest.mark.parametrize("name", NAMES)
def test_a_shipped_model_is_complete_small_and_loads(name):
    model_dir = SHIPPED / name
    names = {path.name for path in model_dir.iterdir()}
    assert {MODEL_FILE, CONFIG_FILE, "vocab.json", METRICS_FILE, CARD_FILE} <= names
    assert (model_dir / MODEL_FILE).stat().st_size <= MAX_MODEL_BYTES
    card = (model_dir / CARD_FILE).read_text()
    for heading in ("## Data", "## How it was made", "## Metrics", "- steps:", "- wall time:"):
        assert heading in card
    assert "python -m flows.pretrained --names " + name in card
    assert MusicTransformer.load(model_dir, torch.device("cpu")).num_parameters() > 1_000_000


@pytest.mark.skipif(not JSB.is_file(), reason=f"{JSB} is not here")
def test_the_shipped_jsb_model_scores_what_its_card_says(prefect_harness, tmp_path, capsys):
    """The issue's command on the shipped model: nothing trained, the last line one JSON
    object; the numbers are the card's: at most 0.40 in one pass (below the published vanilla
    Transformer's 0.417), and lower still averaged over 7 keys."""
    model_dir = SHIPPED / "jsb"
    argv = ["--jsb", str(JSB), "--stages", "evaluate", "--model", str(model_dir)]
    run_cli(symbolic_flow, SymbolicParams, [*argv, "--data-dir", str(tmp_path)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    shipped = json.loads((model_dir / METRICS_FILE).read_text())
    assert printed["valid_nll"] == pytest.approx(shipped["valid_nll"], abs=1e-6)
    assert printed["test_nll"] == pytest.approx(shipped["test_nll"], abs=1e-6)
    assert printed["valid_nll"] <= 0.40
    assert shipped["valid_nll_key_ensemble"] < printed["valid_nll"]


HELDOUT_MIDI = REPO / "tests" / "data" / "heldout_midi"


def heldout_midi_files() -> list[Path]:
    """The held-out prompts: the committed set (see its SOURCES.md) and four real pieces that
    music21 ships outside its corpus."""
    music21_dir = Path(music21.__file__).parent
    shipped_outside_corpus = [
        music21_dir / "omr" / "k525MIDIMvt1.mid",
        *(music21_dir / "midi" / "testPrimitive" / f"test0{n}.mid" for n in (3, 4, 9)),
    ]
    return sorted(HELDOUT_MIDI.glob("*.mid")) + shipped_outside_corpus


def test_the_held_out_midi_set_is_in_the_checkout():
    """All 17 files its SOURCES.md lists travel with the repository (a `data/` ignore rule once
    kept them out of every clone)."""
    listed = (HELDOUT_MIDI / "SOURCES.md").read_text()
    files = sorted(HELDOUT_MIDI.glob("*.mid"))
    assert len(files) == 17
    assert all(f"| {path.name} |" in listed for path in files)


@pytest.fixture(scope="module")
def heldout_study() -> dict:
    if not (SHIPPED / "music21").is_dir():
        pytest.skip("no shipped music21 model")
    return midi_prompt_study(SHIPPED / "music21", heldout_midi_files())


def test_the_music21_model_keeps_the_key_of_midi_nobody_here_wrote(heldout_study):
    """The issue's bar for prompts users bring (other keys, meters, several tracks, drums): the
    continuations keep >= 92 % of their notes in one scale at <= 3.0 bits of pitch-class
    entropy. Every file is read; none is left out."""
    assert heldout_study["rejected"] == []
    assert heldout_study["n_prompts"] == len(heldout_midi_files()) == 21
    model = heldout_study["sources"]["music_transformer"]
    assert model["scale_consistency"] >= 0.92
    assert model["pitch_class_entropy"] <= 3.0


def test_the_music21_model_keeps_the_density_of_midi_nobody_here_wrote(heldout_study):
    """Texture as the issue measures it: notes per beat within a factor 1.5 of the prompt's,
    on average over the prompts."""
    assert 1 / 1.5 <= heldout_study["sources"]["music_transformer"]["density_ratio"] <= 1.5


@pytest.mark.xfail(
    strict=True,
    reason="the aim beyond the issue's bar, not reached: the shipped model writes about 1.5 "
    "voices where the prompts have 3.1 (most of its training pieces are one-line folk tunes)",
)
def test_the_music21_model_keeps_the_voices_of_midi_nobody_here_wrote(heldout_study):
    """The number of sounding voices within a factor 1.5 of the prompt's, on average."""
    model, prompts = heldout_study["sources"]["music_transformer"], heldout_study["prompts"]
    assert 1 / 1.5 <= model["polyphony"] / prompts["polyphony"] <= 1.5


SUPERRES = SHIPPED / "superres-x4-16k"


@pytest.fixture(scope="module")
def superres_metrics() -> dict:
    if not SUPERRES.is_dir():
        pytest.skip("no shipped super-resolution model")
    return json.loads((SUPERRES / METRICS_FILE).read_text())


def test_the_shipped_superres_model_is_complete_small_and_loads(superres_metrics):
    names = {path.name for path in SUPERRES.iterdir()}
    assert {
        MODEL_FILE,
        CONFIG_FILE,
        METRICS_FILE,
        CARD_FILE,
        "train.json",
        CALIBRATION_FILE,
        GATE_FILE,
    } <= names
    assert (SUPERRES / MODEL_FILE).stat().st_size <= MAX_MODEL_BYTES
    card = (SUPERRES / CARD_FILE).read_text()
    for heading in ("## Data", "## How it was made", "## Metrics", "- steps:", "- wall time:"):
        assert heading in card
    assert "python -m flows.pretrained --names superres-x4-16k" in card
    model = load_model(SUPERRES, "cpu")
    assert isinstance(model, GatedExtender)
    assert isinstance(model.spectral, BandwidthExtender)
    assert set(superres_metrics["by_source"]) == {"bach", "recordings-music", "recordings-speech"}
    # It routes at the threshold chosen from the validation files its gate.json lists.
    route = json.loads((SUPERRES / GATE_FILE).read_text())["route"]
    assert model.config.route_above == route["threshold"] == route_threshold(route["files"])
    # The level the model runs at is the one its calibration chose, and the card says so.
    calibration = json.loads((SUPERRES / CALIBRATION_FILE).read_text())
    config = model.config.spectral
    assert (
        config.high_band_gain == calibration["high_band_gain"] == choose_gain(calibration["rows"])
    )
    assert config.pass_below == calibration["pass_below"]
    assert config.pass_below == choose_pass_below(calibration["pass_rows"], "other")
    assert config.pass_below_sharp_edge == calibration["pass_below_sharp_edge"]
    assert config.pass_below_sharp_edge == choose_pass_below(calibration["pass_rows"], "sharp")
    assert config.high_band_budget == calibration["high_band_budget"]
    assert config.high_band_budget == choose_budget(
        calibration["budget_rows"], calibration["rows"], calibration["high_band_gain"]
    )
    assert config.wide_input_gain == calibration["wide_input_gain"]
    assert config.wide_input_gain == choose_gain(calibration["wide_rows"])
    for key in CALIBRATED_SETTINGS:
        assert superres_metrics[key] == calibration[key]


def test_the_shipped_superres_model_halves_the_sincs_lsd_on_held_out_speech_and_renders(
    superres_metrics, tmp_path
):
    """The issue's aim for held-out audio: LSD at most half the sinc's. On the test split's
    speech and renders (the card's numbers) and on the two real recordings in the repository,
    which `make run` super-resolves (each its own reference)."""
    for name in ("recordings-speech", "bach"):
        part = superres_metrics["by_source"][name]
        assert part["lsd"] <= 0.5 * part["sinc_lsd"], name
    for recording in sorted(DEMO_RECORDINGS.glob("*.flac")):
        metrics = superresolve_file(SUPERRES, recording, tmp_path / "out.wav")["metrics"]
        assert metrics["model"]["lsd"] <= 0.5 * metrics["sinc"]["lsd"], recording.name


@pytest.mark.xfail(
    strict=True,
    reason="issue 15, blocked on this aim: music's LSD is 0.520x the sinc's on the held-out "
    "test files (the aim 0.5x; 0.501x at the trained level, before the calibration lowered it "
    "for the SNR; the piano notes' 0.97x is set by bins at the LSD's floor; a fine-tune at "
    "that floor reached 0.511x, docs/AUDIO_MODEL.md)",
)
def test_the_shipped_superres_model_halves_the_sincs_lsd_on_held_out_music(superres_metrics):
    part = superres_metrics["by_source"]["recordings-music"]
    assert part["lsd"] <= 0.5 * part["sinc_lsd"]


def test_the_shipped_superres_model_gains_3_db_over_the_spline_on_held_out_renders(
    superres_metrics, tmp_path
):
    """The issue's aim for the renders (its U-Net's, through the route), while the two real
    recordings in the repository go to the spectral model alone: their output is its own."""
    part = superres_metrics["by_source"]["bach"]
    assert part["snr_db"] >= part["spline_snr_db"] + 3.0
    model = load_model(SUPERRES, "cpu")
    for recording in sorted(DEMO_RECORDINGS.glob("*.flac")):
        lr = load_audio(recording, 4000)
        assert model.weights(spline_upsample(lr, 4, 4 * len(lr))).max() == 0.0, recording.name


def test_the_shipped_superres_model_is_at_least_the_splines_snr_on_held_out_audio(
    superres_metrics,
):
    """Real speech, real music (songs and instruments no training file holds) and renders."""
    for name in ("recordings-speech", "recordings-music", "bach"):
        part = superres_metrics["by_source"][name]
        assert part["snr_db"] >= part["spline_snr_db"], name


def test_the_shipped_superres_model_keeps_an_8_khz_inputs_band_and_beats_the_spline_on_it(
    superres_metrics, tmp_path
):
    """Held-out test files at 8 kHz (the card's `wide_input`): at least the spline's SNR on
    every part and at most 0.6x the sinc's LSD; and the two repository recordings at 8 kHz
    through `--input`: closer to the 16 kHz truth than the spline of the 8 kHz file, and than
    the model run on the file taken down to its own 4 kHz input rate."""
    wide = superres_metrics["wide_input"]
    assert wide["input_rate"] == 8000
    for name in ("recordings-speech", "recordings-music", "bach"):
        part = wide["by_source"][name]
        assert part["snr_db"] >= part["spline_snr_db"], name
        assert part["lsd"] <= 0.6 * part["sinc_lsd"], name
    for recording in sorted(DEMO_RECORDINGS.glob("*.flac")):
        truth = load_audio(recording, 16000)
        at_8_khz = tmp_path / f"{recording.stem}-8k.wav"
        write_wav(at_8_khz, load_audio(recording, 8000), 8000)
        out = superresolve_file(SUPERRES, at_8_khz, tmp_path / "out.wav")
        assert out["kept_input_band_hz"] == 4000
        estimate, _ = sf.read(out["output"], dtype="float32")
        alone = superresolve_file(SUPERRES, recording, tmp_path / "alone.wav")
        from_4_khz, _ = sf.read(alone["output"], dtype="float32")
        n = min(len(truth), len(estimate), len(from_4_khz))
        spline = spline_upsample(load_audio(at_8_khz, 8000), 2, n)
        model_snr = snr_db(truth[:n], estimate[:n])
        assert model_snr >= snr_db(truth[:n], spline), recording.name
        assert model_snr >= snr_db(truth[:n], from_4_khz[:n]) + 2, recording.name


def test_the_shipped_superres_model_loses_at_most_1_db_on_filters_it_never_saw(
    superres_metrics,
):
    robustness = superres_metrics["robustness"]
    assert robustness["seen_filters"] == ["soxr", "cheby", "fir", "none"]
    assert robustness["unseen_loss_db"] <= 1.0
