"""Training the AudioUNet on the pairs dataset: it learns, it resumes, it is deterministic."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from datasets.audio.dataset import file_parts
from models import checkpoint
from models.audio.config import AudioTrainConfig, GatedConfig, preset, profile_config
from models.audio.data import (
    iter_epoch,
    iter_mixed_epoch,
    pair_shards,
    part_rows,
    read_pairs_info,
)
from models.audio.gated import GatedExtender
from models.audio.infer import load_model
from models.audio.losses import relative_mse, stft_loss
from models.audio.train import learning_rate, train_audio_unet, train_seconds, trained_steps
from models.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    STATE_JSON_FILE,
    ModelDirectoryError,
    save_model,
)

torch.set_num_threads(1)


def test_overfits_a_tiny_set_well_above_the_spline(tiny_set: Path, tmp_path: Path) -> None:
    config = AudioTrainConfig(
        preset="tiny", steps=250, batch_size=8, lr=3e-3, log_every=50, eval_split="train"
    )
    summary = train_audio_unet(tiny_set, tmp_path / "run", config)
    rows = pq.read_table(tmp_path / "run" / "metrics.parquet").to_pylist()
    assert [r["step"] for r in rows] == [50, 100, 150, 200, 250]
    assert rows[-1]["mse"] < rows[0]["mse"] / 2
    assert summary["eval_snr_db"] > summary["eval_spline_snr_db"] + 4.0
    assert (tmp_path / "run" / MODEL_FILE).exists()


def small_config(**changes: object) -> AudioTrainConfig:
    base = AudioTrainConfig(
        preset="tiny", steps=12, batch_size=4, log_every=3, checkpoint_every=6, eval_patches=8
    )
    return dataclasses.replace(base, **changes)


class Killed(Exception):
    pass


@pytest.mark.parametrize("part_exponent", [None, 0.0], ids=["shards", "mixed"])
def test_a_killed_run_resumes_to_the_same_bytes(
    audio_data_dir: Path, tmp_path: Path, part_exponent: float | None
) -> None:
    pairs = audio_data_dir / "audio" / "pairs"
    info = read_pairs_info(pairs)
    # Dropout on, so the restored generator state matters too.
    model_config = preset("tiny", dropout=0.3, ratio=info.ratio, hr_rate=info.hr_rate, patch=2048)
    config = small_config(part_exponent=part_exponent)
    train_audio_unet(pairs, tmp_path / "whole", config, model_config)

    def kill_at_step_9(fraction: float) -> None:
        if fraction >= 9 / 12:
            raise Killed

    with pytest.raises(Killed):
        train_audio_unet(pairs, tmp_path / "killed", config, model_config, kill_at_step_9)
    assert not (tmp_path / "killed" / MODEL_FILE).exists()
    assert (tmp_path / "killed" / "checkpoint" / STATE_JSON_FILE).exists()
    summary = train_audio_unet(pairs, tmp_path / "killed", config)
    assert summary["steps"] == 12
    for name in ("metrics.parquet", MODEL_FILE, "config.json"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "killed" / name).read_bytes()


def test_a_checkpoint_of_another_model_size_is_not_resumed(
    audio_data_dir: Path, tmp_path: Path
) -> None:
    """A preset that changed size since a run was killed: the run starts over with the new
    model (to the bytes of a fresh run) instead of training the old one to the new schedule."""
    pairs = audio_data_dir / "audio" / "pairs"
    info = read_pairs_info(pairs)
    old = preset("tiny", ratio=info.ratio, hr_rate=info.hr_rate, patch=2048)
    new = dataclasses.replace(old, widths=(8, 24))
    config = small_config(part_exponent=None)

    def kill_at_step_9(fraction: float) -> None:
        if fraction >= 9 / 12:
            raise Killed

    with pytest.raises(Killed):
        train_audio_unet(pairs, tmp_path / "run", config, old, kill_at_step_9)
    train_audio_unet(pairs, tmp_path / "run", config, new)
    train_audio_unet(pairs, tmp_path / "fresh", config, new)
    for name in ("metrics.parquet", MODEL_FILE, "config.json"):
        assert (tmp_path / "fresh" / name).read_bytes() == (tmp_path / "run" / name).read_bytes()


def test_same_seed_same_metrics_other_seed_other_metrics(
    audio_data_dir: Path,
    tmp_path: Path,
) -> None:
    pairs = audio_data_dir / "audio" / "pairs"
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        train_audio_unet(pairs, tmp_path / name, small_config(steps=6, seed=seed))
    read = lambda name: (tmp_path / name / "metrics.parquet").read_bytes()  # noqa: E731
    assert read("a") == read("b")
    assert read("a") != read("c")


def test_epochs_visit_every_row_once_in_a_seeded_order(audio_data_dir: Path) -> None:
    shards = pair_shards(audio_data_dir / "audio" / "pairs", "train")
    n_rows = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    first = [hr for hr, _ in iter_epoch(shards, 16, seed=0, epoch=0)]
    again = [hr for hr, _ in iter_epoch(shards, 16, seed=0, epoch=0)]
    other = [hr for hr, _ in iter_epoch(shards, 16, seed=0, epoch=1)]
    assert len(first) == n_rows // 16
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])
    rows = np.concatenate(first)
    assert len(np.unique(rows, axis=0)) == len(rows)  # no row twice in an epoch


def test_mixed_epochs_draw_parts_by_their_weight(audio_data_dir: Path) -> None:
    """The renders as two parts, organ (1 train file) and piano (2): with exponent 1 batches
    keep the data's proportions, with exponent 0 the organ gets half of every epoch."""
    shards = pair_shards(audio_data_dir / "audio" / "pairs", "train")
    table = pa.concat_tables(pq.read_table(s, columns=["file_id", "hr"]) for s in shards)
    file_ids = table.column("file_id").to_pylist()
    # Odd phrases are the organ's (`audio_corpus.render_corpus`).
    parts = {file_id: ("organ" if int(file_id[-2:]) % 2 else "piano") for file_id in file_ids}
    part_of_row = {
        np.asarray(hr, dtype=np.float32).tobytes(): parts[file_id]
        for file_id, hr in zip(file_ids, table.column("hr").to_pylist(), strict=True)
    }
    index = part_rows(shards, parts)
    organ_share = sum(p == "organ" for p in part_of_row.values()) / len(part_of_row)
    assert 0.2 < organ_share < 0.45

    def drawn(exponent: float, epoch: int) -> list[np.ndarray]:
        return [hr for hr, _ in iter_mixed_epoch(index, 16, 0, epoch, exponent)]

    for exponent, expected in [(1.0, organ_share), (0.0, 0.5)]:
        batches = drawn(exponent, 0)
        assert len(batches) == table.num_rows // 16
        assert all(np.array_equal(a, b) for a, b in zip(batches, drawn(exponent, 0), strict=True))
        assert not np.array_equal(batches[0], drawn(exponent, 1)[0])
        rows = np.concatenate(batches)
        share = np.mean([part_of_row[row.tobytes()] == "organ" for row in rows])
        assert share == pytest.approx(expected, abs=0.08)
        # Every batch mixes the parts (a shard-by-shard order would not).
        assert np.mean([len({part_of_row[r.tobytes()] for r in b}) == 2 for b in batches]) > 0.9


def test_stft_loss_is_zero_only_for_equal_signals() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4096, generator=g)
    assert stft_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert stft_loss(x + 0.1 * torch.randn(2, 4096, generator=g), x).item() > 0.01


def test_relative_mse_is_each_patchs_inverse_snr_whatever_its_loudness() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 1, 4096, generator=g) * torch.tensor([1.0, 0.1])[:, None, None]
    estimate = target + 0.1 * target.std(dim=(1, 2), keepdim=True) * torch.randn(2, 1, 4096)
    per_patch = [relative_mse(estimate[i : i + 1], target[i : i + 1]).item() for i in (0, 1)]
    assert per_patch == pytest.approx([0.01, 0.01], rel=0.1)  # 20 dB SNR, loud or quiet
    assert relative_mse(estimate, target).item() == pytest.approx(np.mean(per_patch))
    assert relative_mse(10 * estimate, 10 * target).item() == pytest.approx(
        relative_mse(estimate, target).item(), rel=1e-3
    )


def test_training_with_the_relative_mse(audio_data_dir: Path, tmp_path: Path) -> None:
    pairs = audio_data_dir / "audio" / "pairs"
    config = small_config(steps=3, relative_mse=True)
    summary = train_audio_unet(pairs, tmp_path / "run", config)
    rows = pq.read_table(tmp_path / "run" / "metrics.parquet").to_pylist()
    assert summary["steps"] == 3
    # The loss is an inverse SNR (about 0.1-1 here), the logged MSE the plain one (~1e-3).
    assert rows[-1]["loss"] > 10 * rows[-1]["mse"]


def test_training_with_the_stft_term(audio_data_dir: Path, tmp_path: Path) -> None:
    pairs = audio_data_dir / "audio" / "pairs"
    summary = train_audio_unet(pairs, tmp_path / "run", small_config(steps=3, stft_weight=1e-5))
    rows = pq.read_table(tmp_path / "run" / "metrics.parquet").to_pylist()
    assert summary["steps"] == 3
    assert rows[-1]["loss"] > rows[-1]["mse"]


def test_missing_pairs_and_unfit_patches_are_clear_errors(tmp_path: Path, tiny_set: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"no train-\\*.parquet shards in {tmp_path}"):
        train_audio_unet(tmp_path, tmp_path / "run", small_config())
    wrong_ratio = preset("tiny", ratio=2, hr_rate=16000, patch=2048)
    with pytest.raises(ValueError, match="ratio 4, with patch 2048 do not fit"):
        train_audio_unet(tiny_set, tmp_path / "run", small_config(), wrong_ratio)


def _run_files(run_dir: Path) -> dict[str, bytes]:
    """Every file's bytes; the checkpoint's scalars without the wall time they record."""
    files = {
        p.relative_to(run_dir).as_posix(): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }
    state = json.loads(files.pop(f"checkpoint/{STATE_JSON_FILE}"))
    assert state["extra"].pop("seconds") > 0
    return files | {STATE_JSON_FILE: json.dumps(state).encode()}


def test_resume_is_exact_when_checkpoints_fall_between_logged_rows(
    audio_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checkpoints every 5 steps, rows every 4 (quick's 50 and 20 have the same trouble): a
    run resumed from step 10 still averages the loss of steps 9-12 into row 12, a run killed
    between the last checkpoint's commit record and moving its files in resumes from that
    checkpoint and leaves nothing stale behind, and the summary (stamped by the task) is the
    same."""
    pairs = audio_data_dir / "audio" / "pairs"
    config = small_config(steps=15, log_every=4, checkpoint_every=5, cosine=True)
    straight = train_audio_unet(pairs, tmp_path / "straight", config)

    def kill_at_step_12(fraction: float) -> None:
        if fraction >= 12 / 15:
            raise Killed

    with pytest.raises(Killed):
        train_audio_unet(pairs, tmp_path / "killed", config, progress=kill_at_step_12)
    real_finish = checkpoint.finish_checkpoint

    def finish_unless_last(directory: Path) -> None:
        state = Path(directory) / checkpoint.PENDING_DIR / STATE_JSON_FILE
        if json.loads(state.read_text())["extra"]["step"] == 15:  # committed, not moved in
            raise Killed
        real_finish(directory)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "finish_checkpoint", finish_unless_last)
        with pytest.raises(Killed):
            train_audio_unet(pairs, tmp_path / "killed", config)
    killed = tmp_path / "killed" / "checkpoint"
    assert (killed / checkpoint.PENDING_DIR / checkpoint.COMMIT_FILE).exists()
    assert json.loads((killed / STATE_JSON_FILE).read_text())["extra"]["step"] == 10
    resumed = train_audio_unet(pairs, tmp_path / "killed", config)
    assert _run_files(tmp_path / "killed") == _run_files(tmp_path / "straight")
    # The wall time adds up over the three calls: more than the last one alone took.
    assert train_seconds(tmp_path / "killed") > resumed["seconds"]
    assert trained_steps(tmp_path / "killed") == 15
    ignore = {"seconds", "run_dir"}
    assert {k: v for k, v in resumed.items() if k not in ignore} == {
        k: v for k, v in straight.items() if k not in ignore
    }


def test_full_profile_takes_the_paper_model_and_its_settings_on_a_gpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu = profile_config("full", 0)
    assert (cpu.preset, cpu.batch_size, cpu.lr) == ("full", 8, 1e-3)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = profile_config("full", 3, steps=10)
    assert (gpu.preset, gpu.batch_size, gpu.lr, gpu.seed) == ("paper", 32, 3e-4, 3)
    assert gpu.steps == 10  # an override still wins over the GPU defaults
    assert profile_config("quick", 0).preset == "quick"
    # The spectral model keeps its own preset and settings, on a GPU too.
    bwe = profile_config("full", 0, arch="bwe")
    assert (bwe.preset, bwe.batch_size) == ("bwe-full", 16)
    assert bwe.stft_weight > 0
    assert bwe.steps > cpu.steps
    with pytest.raises(ValueError, match="unknown audio model"):
        profile_config("full", 0, arch="wavenet")


def test_the_cosine_schedule_runs_from_the_rate_to_its_floor() -> None:
    config = AudioTrainConfig(steps=101, lr=1e-3, cosine=True, min_lr_ratio=0.1)
    assert learning_rate(config, 0) == pytest.approx(1e-3)
    assert learning_rate(config, 50) == pytest.approx(0.55e-3)
    assert learning_rate(config, 100) == pytest.approx(1e-4)
    assert learning_rate(AudioTrainConfig(lr=2e-3), 70) == 2e-3  # constant unless asked


def test_a_run_can_start_from_another_models_weights(audio_data_dir: Path, tmp_path: Path) -> None:
    """`init_from` (fine-tuning): the run trains that model from its weights, at its trained
    settings (a calibrated level back at 1); a model of the other architecture, or a broken
    directory, is refused by name."""
    pairs = audio_data_dir / "audio" / "pairs"
    train_audio_unet(pairs, tmp_path / "first", small_config(preset="bwe-tiny"))
    calibrated = json.loads((tmp_path / "first" / CONFIG_FILE).read_text())
    (tmp_path / "first" / CONFIG_FILE).write_text(json.dumps(calibrated | {"high_band_gain": 0.3}))
    # One step at a rate too small to move a weight: the run starts where the first ended.
    config = small_config(preset="bwe-tiny", steps=1, lr=1e-12, init_from=str(tmp_path / "first"))
    train_audio_unet(pairs, tmp_path / "second", config)
    assert json.loads((tmp_path / "second" / CONFIG_FILE).read_text()) == calibrated
    first, second = (
        load_model(tmp_path / name, "cpu").state_dict() for name in ("first", "second")
    )
    for name, weights in first.items():
        torch.testing.assert_close(second[name], weights, rtol=0, atol=1e-9)
    fresh = small_config(preset="bwe-tiny", steps=1, lr=1e-12)
    train_audio_unet(pairs, tmp_path / "fresh", fresh)
    assert not torch.equal(
        load_model(tmp_path / "fresh", "cpu").amp_in.weight, first["amp_in.weight"]
    )
    with pytest.raises(ValueError, match=r"spectral .* cannot start a run of preset 'tiny'"):
        train_audio_unet(pairs, tmp_path / "unet", small_config(init_from=str(tmp_path / "first")))
    with pytest.raises(ModelDirectoryError, match="none: no such model directory"):
        train_audio_unet(pairs, tmp_path / "x", small_config(init_from=str(tmp_path / "none")))
    shutil.copytree(tmp_path / "first", tmp_path / "broken")
    weights = tmp_path / "broken" / MODEL_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelDirectoryError, match=r"broken/model\.safetensors"):
        train_audio_unet(pairs, tmp_path / "x", small_config(init_from=str(tmp_path / "broken")))


def test_a_run_can_start_from_a_gated_models_network(audio_data_dir: Path, tmp_path: Path) -> None:
    """From a gated model (the shipped one), a spectral run starts from its spectral network
    and a U-Net run from its U-Net."""
    pairs = audio_data_dir / "audio" / "pairs"
    tiny = {"patch": 2048, "hr_rate": 16000, "ratio": 4}
    config = GatedConfig(spectral=preset("bwe-tiny", **tiny), unet=preset("tiny", **tiny))
    gated = GatedExtender(config, torch.Generator().manual_seed(3))
    save_model(tmp_path / "gated", gated, config)
    for arch, network in (("bwe-tiny", gated.spectral), ("tiny", gated.unet)):
        run = small_config(preset=arch, steps=1, lr=1e-12, init_from=str(tmp_path / "gated"))
        train_audio_unet(pairs, tmp_path / arch, run)
        started = load_model(tmp_path / arch, "cpu").state_dict()
        for name, weights in network.state_dict().items():
            torch.testing.assert_close(started[name], weights, rtol=0, atol=1e-9)


def test_a_run_keeps_the_inputs_band_when_asked(audio_data_dir: Path, tmp_path: Path) -> None:
    pairs = audio_data_dir / "audio" / "pairs"
    train_audio_unet(pairs, tmp_path / "kept", small_config(steps=3, keep_below=0.75))
    assert json.loads((tmp_path / "kept" / CONFIG_FILE).read_text())["keep_below"] == 0.75
    with pytest.raises(ValueError, match="keep_below for a run is the U-Net's"):
        train_audio_unet(pairs, tmp_path / "bwe", small_config(preset="bwe-tiny", keep_below=0.7))


def test_a_run_on_some_parts_never_draws_the_others(audio_data_dir: Path, tmp_path: Path) -> None:
    """The renders as the parts of a mix, organ and piano (`audio_corpus.render_corpus`: odd
    phrases are the organ's); the organ's training patches made NaN: a run on both parts is
    poisoned by them, a run on the piano never sees them."""
    data = tmp_path / "data"
    shutil.copytree(audio_data_dir, data)
    files = pq.read_table(data / "audio" / "files.parquet")
    paths = [
        f"{'organ' if int(file_id[-2:]) % 2 else 'piano'}/{path}"
        for file_id, path in zip(
            files.column("file_id").to_pylist(), files.column("path").to_pylist(), strict=True
        )
    ]
    files = files.set_column(files.column_names.index("path"), "path", pa.array(paths))
    pq.write_table(files, data / "audio" / "files.parquet")
    parts = file_parts(data)
    poisoned, clean = "organ", "piano"
    for shard in pair_shards(data / "audio" / "pairs", "train"):
        table = pq.read_table(shard)
        hr = np.stack([np.asarray(row, dtype=np.float32) for row in table.column("hr").to_pylist()])
        hr[[parts[f] == poisoned for f in table.column("file_id").to_pylist()]] = np.nan
        column = pa.array(list(hr), type=table.schema.field("hr").type)
        pq.write_table(table.set_column(table.column_names.index("hr"), "hr", column), shard)
    pairs = data / "audio" / "pairs"
    config = small_config(steps=6, eval_split="train")
    assert np.isnan(train_audio_unet(pairs, tmp_path / "all", config)["final_mse"])
    only = train_audio_unet(pairs, tmp_path / "only", dataclasses.replace(config, parts=(clean,)))
    assert np.isfinite(only["final_mse"])
    with pytest.raises(ValueError, match=r"no training patches of the parts \['organs'\]"):
        train_audio_unet(pairs, tmp_path / "x", dataclasses.replace(config, parts=("organs",)))
