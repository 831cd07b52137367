"""The gate between the spectral card's high band and a U-Net's (`models.audio.gate`): the mix
it makes, features that ignore the level, a fit that opens where the U-Net is right and closes
where it is not, and the fit and the score on a data directory."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from datasets.audio.signals import spline_upsample
from models.audio.config import GatedConfig, preset
from models.audio.gate import (
    GATE_FILE,
    assemble,
    block_terms,
    fit_gate,
    fit_on_split,
    route_threshold,
    score,
    write_gated_model,
)
from models.audio.gated import (
    Gate,
    GatedExtender,
    block_features,
    mix,
    route,
    sample_weights,
    spans,
)
from models.audio.infer import (
    DEFAULT_OVERLAP,
    load_model,
    run_chunked,
    superresolve_at_level,
    superresolve_file,
    superresolve_gated,
)
from models.audio.train import TRAIN_JSON
from models.checkpoint import ModelDirectoryError, save_model

torch.set_num_threads(1)
RATE, NYQUIST = 16000, 2000.0
BLOCK, BANDS = GatedConfig.block, GatedConfig.bands
TINY = {"patch": 2048, "hr_rate": RATE, "ratio": 4}


def tone(hz: float, n: int = 4 * BLOCK) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(n) / RATE)


def test_the_mix_weighs_the_two_outputs_and_reads_only_the_one_it_needs():
    spectral, unet = tone(500), tone(3000)
    w = np.repeat([0.0, 0.25, 1.0, 0.5], BLOCK)
    mixed = mix(spectral, unet, w)
    np.testing.assert_allclose(mixed, (1 - w) * spectral + w * unet, atol=1e-6)
    # Where a network did not run its output is never read.
    spectral[2 * BLOCK : 3 * BLOCK] = np.nan
    unet[:BLOCK] = np.inf
    np.testing.assert_allclose(mix(spectral, unet, w), mixed, atol=1e-6)


def test_block_features_describe_the_shape_not_the_level():
    rng = np.random.default_rng(0)
    x = np.convolve(rng.standard_normal(5 * BLOCK), np.ones(4) / 4, "same")
    x[: 2 * BLOCK] *= 0.1  # two quiet blocks, then three loud ones
    features = block_features(x, RATE, NYQUIST, BLOCK, BANDS)
    assert features.shape == (5, BANDS + 2)
    np.testing.assert_allclose(
        block_features(30 * x, RATE, NYQUIST, BLOCK, BANDS), features, atol=1e-6
    )
    assert features[:, -1].max() == 0.0
    assert np.all(features[:2, -1] < -1.5)  # 20 dB under the loudest block


def test_the_fit_opens_where_the_unet_is_right_and_closes_where_it_is_not():
    """Blocks of two kinds, told apart by their first feature: where the U-Net's band is the
    truth (<e, d> = |d|^2: the best weight 1) and where it points away from it (the best 0)."""
    rng = np.random.default_rng(0)
    kind = rng.integers(0, 2, 400)
    features = np.column_stack([2.0 * kind - 1, rng.standard_normal((400, 3))])
    features[:, 0] += 0.1 * rng.standard_normal(400)
    power = rng.uniform(0.5, 2.0, 400)
    cross = np.where(kind == 1, power, -0.5 * power)
    gate = fit_gate(features, cross, power, steps=500)
    weights = gate.block_weights(features)
    assert weights[kind == 1].min() > 0.8
    assert weights[kind == 0].max() < 0.2


def test_sample_weights_run_between_block_centres():
    w = sample_weights(np.array([0.0, 1.0, 0.5]), 3 * BLOCK + 100, BLOCK)
    assert w[: BLOCK // 2 + 1].tolist() == [0.0] * (BLOCK // 2 + 1)
    assert w[BLOCK] == pytest.approx(0.5)
    assert w[3 * BLOCK // 2] == 1.0
    assert w[-1] == 0.5  # the last block's beyond its centre, the short tail included
    assert sample_weights(np.zeros(0), BLOCK - 1, BLOCK).tolist() == [0.0] * (BLOCK - 1)


def test_spans_are_widened_to_multiples_and_merged():
    needed = np.zeros(100, dtype=bool)
    needed[10:20] = needed[26:30] = needed[90:] = True
    assert spans(needed, 3) == [(7, 33), (87, 100)]
    assert spans(needed, 0) == [(10, 20), (26, 30), (90, 100)]
    assert spans(needed, 0, 4) == [(8, 20), (24, 32), (88, 100)]
    assert spans(np.zeros(5, dtype=bool), 3) == []


def test_block_terms_are_the_error_of_the_mix_as_a_function_of_the_weight():
    """|e - w d|^2 over the file's energy = |e|^2 / E - 2 w <e, d> / E + w^2 |d|^2 / E."""
    rng = np.random.default_rng(2)
    reference, spectral, unet = (rng.standard_normal(2 * BLOCK) for _ in range(3))
    cross, power = block_terms(reference, spectral, unet, BLOCK)
    w = 0.3
    mixed = mix(spectral, unet, np.full(len(spectral), w)).astype(np.float64)
    error = (reference - mixed).reshape(2, -1)
    base = (reference - spectral).reshape(2, -1)
    energy = np.mean(np.sum(reference.reshape(2, -1) ** 2, 1))
    expected = (np.sum(error**2, 1) - np.sum(base**2, 1)) / energy
    np.testing.assert_allclose(w * w * power - 2 * w * cross, expected, rtol=1e-5, atol=1e-7)


def tiny_gated(seed: int = 0) -> GatedExtender:
    """Untrained tiny networks (the U-Net returns its spline input) in a gated model."""
    config = GatedConfig(spectral=preset("bwe-tiny", **TINY), unet=preset("tiny", **TINY))
    return GatedExtender(config, torch.Generator().manual_seed(seed)).eval()


def set_open(model: GatedExtender, bias: float) -> None:
    """Every block's weight sigmoid(bias), whatever the input."""
    n = model.config.features
    model.set_gate(Gate((0.0,) * n, (1.0,) * n, (0.0,) * n, bias))


def spline_input(model: GatedExtender, lr: np.ndarray) -> np.ndarray:
    return spline_upsample(lr, model.config.ratio, len(lr) * model.config.ratio)


def counting_calls(network: torch.nn.Module) -> list[int]:
    """The number of samples each forward pass of `network` sees, as it runs."""
    seen: list[int] = []
    network.register_forward_hook(lambda _, args, __: seen.append(args[0].numel()))
    return seen


def test_a_shut_gate_is_the_spectral_model_and_an_open_one_the_unet():
    model = tiny_gated()
    with torch.no_grad():  # a U-Net that differs from its input
        model.unet.last.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
    unet_calls, spectral_calls = counting_calls(model.unet), counting_calls(model.spectral)
    lr = np.random.default_rng(0).standard_normal(4 * BLOCK // 4 + 37).astype(np.float32)
    spectral = superresolve_at_level(model.spectral, lr)[0]
    unet = run_chunked(model.unet, spline_input(model, lr))
    assert np.abs(unet - spectral).max() > 1e-3
    unet_calls.clear()
    spectral_calls.clear()
    set_open(model, -30.0)
    np.testing.assert_array_equal(superresolve_gated(model, lr)[0], spectral)
    assert unet_calls == []
    set_open(model, 30.0)
    spectral_calls.clear()
    np.testing.assert_array_equal(superresolve_gated(model, lr)[0], unet)
    assert spectral_calls == []


def test_routing_sends_the_whole_input_to_one_network_by_its_mean_weight():
    """Half the blocks open (loud) and half shut (quiet): mean weight 0.5. Routed above 0.4
    the whole output is the U-Net's and the spectral model never runs; above 0.6 the other
    way round."""
    assert route(np.array([0.3, 0.9]), 0.5)
    assert not route(np.array([0.3, 0.6]), 0.5)
    assert not route(np.zeros(0), 0.0)
    model = tiny_gated()
    with torch.no_grad():
        model.unet.last.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
    n = model.config.features
    weights = [0.0] * n
    weights[-1] = 10.0
    model.set_gate(Gate((0.0,) * n, (1.0,) * n, tuple(weights), 5.0))
    rng = np.random.default_rng(0)
    lr = rng.standard_normal(8 * BLOCK // 4).astype(np.float32)
    lr[: 4 * BLOCK // 4] *= 1e-3
    x = spline_input(model, lr)
    assert np.mean(model.block_weights(x)) == pytest.approx(0.5, abs=0.01)
    unet_calls, spectral_calls = counting_calls(model.unet), counting_calls(model.spectral)
    model.config = dataclasses.replace(model.config, route_above=0.4)
    np.testing.assert_array_equal(superresolve_gated(model, lr)[0], run_chunked(model.unet, x))
    assert spectral_calls == []
    model.config = dataclasses.replace(model.config, route_above=0.6)
    unet_calls.clear()
    np.testing.assert_array_equal(
        superresolve_gated(model, lr)[0], superresolve_at_level(model.spectral, lr)[0]
    )
    assert unet_calls == []
    with pytest.raises(ValueError, match="route_above"):
        dataclasses.replace(model.config, route_above=1.5)


def routed_file(weight: float, gain_db: float) -> dict:
    return {"mean_weight": weight, "unet_minus_spectral_db": gain_db}


def test_the_route_keeps_the_gains_as_far_from_the_losses_as_they_allow():
    renders = [routed_file(0.99, 4.0), routed_file(0.97, 3.0)]
    harmless = [routed_file(0.3, -5.0), routed_file(0.93, 0.05)]
    # The highest threshold under every file the U-Net gains on, not the lowest that holds.
    assert route_threshold(renders + harmless) == 0.95
    assert route_threshold([*renders, routed_file(0.75, -8.0)]) == 0.95
    # A loser above the gains raises it past them, to the lowest threshold that holds.
    assert route_threshold([*renders, routed_file(0.98, -2.0)]) == 0.99
    assert route_threshold([routed_file(0.995, 4.0), routed_file(0.998, -2.0)]) == 1.0
    # Gains of under 1 dB do not open it.
    assert route_threshold([routed_file(0.99, 0.5), *harmless]) == 1.0
    assert route_threshold([]) == 1.0
    # A gain at a low weight: every threshold under it keeps it; the losses then decide.
    assert route_threshold([routed_file(0.45, 2.0), routed_file(0.65, -1.0)]) == 0.7


def test_an_input_shorter_than_a_block_is_the_spectral_models():
    model = tiny_gated()
    set_open(model, 30.0)
    for n in (1, 37, BLOCK // 4 - 1):
        lr = np.random.default_rng(n).standard_normal(n).astype(np.float32)
        np.testing.assert_array_equal(
            superresolve_gated(model, lr)[0], superresolve_at_level(model.spectral, lr)[0]
        )


def test_each_network_runs_only_where_its_output_has_a_share():
    """The loud half of the input opens the gate (the level feature), the quiet half does not:
    the spectral model runs on the quiet half and a margin, the U-Net on the loud half and a
    margin, and each half is the output of its network there."""
    model = tiny_gated()
    with torch.no_grad():
        model.unet.last.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
    n = model.config.features
    weights = [0.0] * n
    weights[-1] = 10.0  # open at the loudest blocks, shut 20 dB under them
    model.set_gate(Gate((0.0,) * n, (1.0,) * n, tuple(weights), 5.0))
    unet_calls = counting_calls(model.unet)
    rng = np.random.default_rng(0)
    lr = rng.standard_normal(16 * BLOCK // 4).astype(np.float32)
    lr[: 8 * BLOCK // 4] *= 1e-3
    estimate = superresolve_gated(model, lr)[0]
    x = spline_input(model, lr)
    w = model.weights(x)
    assert w[: 7 * BLOCK].max() == 0.0
    assert w[9 * BLOCK :].min() == 1.0
    [(spectral_start, spectral_stop)] = spans(w < 1.0, DEFAULT_OVERLAP, 4)
    [(unet_start, unet_stop)] = spans(w > 0.0, DEFAULT_OVERLAP)
    assert spectral_start == 0 < unet_start < spectral_stop < unet_stop == len(x)
    spectral = superresolve_at_level(model.spectral, lr[: spectral_stop // 4])[0]
    np.testing.assert_array_equal(estimate[w == 0.0], spectral[(w == 0.0)[:spectral_stop]])
    unet = run_chunked(model.unet, x[unet_start:])
    np.testing.assert_array_equal(estimate[w == 1.0], unet[(w == 1.0)[unet_start:]])
    assert sum(unet_calls) < 2 * len(x)  # chunks of the open stretch only


def test_fitted_written_loaded_and_scored_on_a_data_directory(audio_data_dir, tmp_path):
    """Two untrained models: the gate fitted on the training files, the gated model written
    and loaded back with its gate, and a table per part of the validation files."""
    model = tiny_gated()
    for name, network in (("spectral", model.spectral), ("unet", model.unet)):
        save_model(tmp_path / name, network, network.config)
    (tmp_path / "spectral" / TRAIN_JSON).write_text(json.dumps({"pairs": {"filter": "soxr"}}))
    gate = fit_on_split(assemble(tmp_path / "spectral", tmp_path / "unet"), str(audio_data_dir))
    assert len(gate.weights) == BANDS + 2
    written, _ = write_gated_model(
        tmp_path / "spectral", tmp_path / "unet", str(audio_data_dir), tmp_path / "gated"
    )
    assert written.gate == gate
    record = json.loads((tmp_path / "gated" / GATE_FILE).read_text())
    assert record["gate"]["bias"] == gate.bias
    # The route, chosen from the validation files it read (recorded beside the fit).
    route_record = record["route"]
    assert route_record["files"]
    assert route_record["split"] == "valid"
    assert written.config.route_above == route_record["threshold"]
    assert route_record["threshold"] == route_threshold(route_record["files"])
    assert (tmp_path / "gated" / TRAIN_JSON).is_file()
    loaded = load_model(tmp_path / "gated", "cpu")
    assert isinstance(loaded, GatedExtender)
    assert loaded.config == written.config
    assert loaded.gate == gate
    table = score(loaded, str(audio_data_dir), "valid")
    assert table
    for row in table.values():
        assert row["n_files"] >= 1
        assert 0.0 <= row["mean_weight"] <= 1.0
        assert np.isfinite([row[k] for k in row if k != "n_files"]).all()
    wav = tmp_path / "in.wav"
    sf.write(wav, np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1, 4000)
    result = superresolve_file(tmp_path / "gated", wav, tmp_path / "out.wav")
    assert sf.info(str(tmp_path / "out.wav")).samplerate == RATE
    assert "high_band_gain" in result  # None where the gate left the spectral model no stretch


def test_blend_writes_a_model_that_mixes_per_block(audio_data_dir, tmp_path):
    model = tiny_gated()
    for name, network in (("spectral", model.spectral), ("unet", model.unet)):
        save_model(tmp_path / name, network, network.config)
    written, record = write_gated_model(
        tmp_path / "spectral", tmp_path / "unet", str(audio_data_dir), tmp_path / "gated", True
    )
    assert written.config.route_above is None
    assert record["route"] is None
    assert load_model(tmp_path / "gated", "cpu").config.route_above is None


def test_assemble_refuses_a_network_of_the_wrong_kind(tmp_path):
    model = tiny_gated()
    save_model(tmp_path / "unet", model.unet, model.unet.config)
    with pytest.raises(ValueError, match="not a BWEConfig model"):
        assemble(tmp_path / "unet", tmp_path / "unet")


def test_a_gated_model_whose_networks_disagree_is_refused_by_name(tmp_path):
    model = tiny_gated()
    save_model(tmp_path / "gated", model, model.config)
    config = json.loads((tmp_path / "gated" / "config.json").read_text())
    config["unet"]["ratio"] = 2
    (tmp_path / "gated" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirectoryError, match=r"config\.json.*differ"):
        load_model(tmp_path / "gated", "cpu")
