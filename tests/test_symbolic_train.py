"""Training: the streamed lanes, the schedule, learning, determinism and resume."""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from run_files import comparable_bytes
from symbolic_corpus import VOCAB, write_symbolic

from datasets.io import write_parquet_atomic
from models import checkpoint
from models.symbolic.config import PROFILES, MusicConfig, TrainConfig
from models.symbolic.data import first_pieces, lane_segments, read_pieces, shuffled_pieces
from models.symbolic.evaluate import evaluate
from models.symbolic.train import learning_rate, train
from models.symbolic.transformer import MusicTransformer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def symbolic(tmp_path_factory) -> Path:
    return write_symbolic(tmp_path_factory.mktemp("music"))


def test_lanes_carry_pieces_end_to_end(symbolic):
    path = symbolic / "tokens" / "train.parquet"
    stream = np.concatenate([p.tokens for p in read_pieces(path)])
    pieces = shuffled_pieces(path, torch.Generator().manual_seed(0), buffer=1_000_000)
    segments = lane_segments(pieces, batch_size=3, seg_len=16)
    lanes: list[list[np.ndarray]] = [[], [], []]
    for _ in range(40):
        segment = next(segments)
        assert segment.tokens.shape == (3, 17) == segment.beats.shape
        for lane in range(3):
            lanes[lane].append(segment.tokens[lane, :-1].numpy())
    # Every lane is a run of whole pieces (bos ... eos), and every token of the file is used.
    joined = [np.concatenate(parts) for parts in lanes]
    for lane in joined:
        assert lane[0] == VOCAB.bos
    first_epoch_tokens = sum(int((lane == VOCAB.bos).sum()) for lane in joined)
    assert first_epoch_tokens >= len(list(read_pieces(path)))
    assert (
        sorted(np.concatenate(joined)[: len(stream)].tolist())[:10] == sorted(stream.tolist())[:10]
    )


def test_segments_continue_each_other(symbolic):
    path = symbolic / "tokens" / "train.parquet"
    pieces = shuffled_pieces(path, torch.Generator().manual_seed(0), buffer=4)
    segments = lane_segments(pieces, batch_size=2, seg_len=8)
    a, b = next(segments), next(segments)
    # The last target of one segment is the first input of the next (no token skipped).
    assert torch.equal(a.tokens[:, -1], b.tokens[:, 0])
    assert torch.equal(a.beats[:, -1], b.beats[:, 0])


def test_shuffle_is_seeded_and_bounded(symbolic):
    path = symbolic / "tokens" / "train.parquet"

    def order(seed):
        stream = shuffled_pieces(path, torch.Generator().manual_seed(seed), buffer=4)
        return [(p.piece_id, p.transpose) for _, (_, p) in zip(range(12), stream, strict=False)]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == sorted((p.piece_id, p.transpose) for p in read_pieces(path))


def test_a_stretch_of_training_meets_the_whole_corpus_not_its_first_pieces(tmp_path):
    """The tokens file is sorted by piece: the row groups are taken in a random order each
    epoch, so the first pieces a run meets come from all over the file, not from its start."""
    write_symbolic(tmp_path, pieces={"train": 40, "valid": 1, "test": 1}, keys=(0,))
    path = tmp_path / "symbolic" / "tokens" / "train.parquet"
    assert pq.ParquetFile(path).num_row_groups == 1  # 40 rows: one group of TOKEN_ROW_GROUP
    table = pq.read_table(path)
    regrouped = tmp_path / "regrouped.parquet"
    write_parquet_atomic(regrouped, table, row_group_size=4)
    stream = shuffled_pieces(regrouped, torch.Generator().manual_seed(0), buffer=4)
    first = [int(p.piece_id[-3:]) for _, (_, p) in zip(range(8), stream, strict=False)]
    assert len({number // 10 for number in first}) >= 3  # from 3 of the file's 4 quarters
    again = shuffled_pieces(regrouped, torch.Generator().manual_seed(0), buffer=4)
    epoch = [p.piece_id for _, (e, p) in zip(range(40), again, strict=False) if e == 0]
    assert sorted(epoch) == sorted(table.column("piece_id").to_pylist())  # each once


def test_first_pieces_respects_the_budget(symbolic):
    path = symbolic / "tokens" / "train.parquet"
    pieces = list(first_pieces(path, torch.Generator().manual_seed(0), 8, max_tokens=300))
    lengths = [len(p.tokens) for p in pieces]
    assert sum(lengths[:-1]) < 300 <= sum(lengths)
    everything = list(first_pieces(path, torch.Generator().manual_seed(0), 8, 10**9))
    assert len(everything) == len(list(read_pieces(path)))  # one epoch at most


def test_learning_rate_schedule():
    config = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(10, config) == pytest.approx(1.0)
    assert learning_rate(99, config) == pytest.approx(0.1, abs=1e-3)
    rates = [learning_rate(s, config) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(rates))


def test_bad_token_file_names_the_file(tmp_path):
    import pyarrow as pa

    from datasets.io import write_parquet_atomic

    bad = tmp_path / "bad.parquet"
    table = pa.table(
        {
            "piece_id": ["x"],
            "transpose": pa.array([0], pa.int8()),
            "tokens": [[1, 5, 2]],
            "beats": [[0, 0]],
            "bar_steps": pa.array([16], pa.int32()),
        }
    )
    write_parquet_atomic(bad, table)
    with pytest.raises(ValueError, match=r"bad\.parquet.*'x'"):
        list(read_pieces(bad))


def test_a_tiny_model_overfits_one_piece(tmp_path):
    symbolic = write_symbolic(tmp_path, {"train": 1, "valid": 1, "test": 1}, keys=(0,))
    train_path = symbolic / "tokens" / "train.parquet"
    model_config = MusicConfig.preset("tiny", VOCAB.size)
    train_config = replace(PROFILES["tiny"], steps=300, batch_size=4, lr=3e-3, log_every=50)
    untrained = evaluate(MusicTransformer(model_config), train_path)["nll"]
    result = train(tmp_path / "run", train_path, train_path, model_config, train_config)
    trained = evaluate(MusicTransformer.load(tmp_path / "run"), train_path)["nll"]
    # ln(vocab) = 5.1 nats before training; the piece is learned to well under 1 nat per token.
    assert untrained > 4.5
    assert result["final_train_loss"] < 0.8
    assert trained < 1.0


def test_same_seed_same_run_and_resume_continues_it(symbolic, tmp_path):
    train_path, valid_path = (
        symbolic / "tokens" / "train.parquet",
        symbolic / "tokens" / "valid.parquet",
    )
    model_config = MusicConfig.preset("tiny", VOCAB.size)
    train_config = replace(PROFILES["tiny"], steps=24, checkpoint_every=8, valid_every=8)
    straight = train(tmp_path / "a", train_path, valid_path, model_config, train_config)
    again = train(tmp_path / "b", train_path, valid_path, model_config, train_config)
    stopped = train(tmp_path / "c", train_path, valid_path, model_config, train_config, stop_at=16)
    assert not stopped["finished"]
    assert stopped["steps"] == 16
    resumed = train(tmp_path / "c", train_path, valid_path, model_config, train_config)
    assert resumed["resumed_from"] == 16
    assert resumed["finished"]

    for run in ("b", "c"):
        for name in ("model.safetensors", "metrics.parquet", "config.json"):
            assert (tmp_path / run / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    assert straight["final_train_loss"] == again["final_train_loss"] == resumed["final_train_loss"]

    with pytest.raises(ValueError, match="other settings"):
        train(tmp_path / "c", train_path, valid_path, model_config, replace(train_config, steps=30))

    metrics = pq.read_table(tmp_path / "a" / "metrics.parquet").to_pylist()
    steps = [row["step"] for row in metrics if row["kind"] == "step"]
    assert steps == [*list(range(5, 25, 5)), 24]
    assert any(row["kind"] == "epoch" for row in metrics)
    assert json.loads((tmp_path / "a" / "train_config.json").read_text())["steps"] == 24


class Killed(Exception):
    """Stands in for a SIGKILL at one point of a checkpoint."""


def _run_files(run_dir: Path) -> dict[str, bytes]:
    return {
        p.relative_to(run_dir).as_posix(): comparable_bytes(p)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("where", ["after the weights", "while moving files in", "after the end"])
def test_a_kill_inside_a_checkpoint_resumes_to_the_same_bytes(
    symbolic, tmp_path, monkeypatch, where
):
    """A checkpoint is several files; a kill between them must not leave weights of one step
    beside the optimizer state of another, and a kill after the last step must not lose the
    closing epoch row: the resumed run ends with every file byte-identical."""

    paths = symbolic / "tokens" / "train.parquet", symbolic / "tokens" / "valid.parquet"
    model_config = MusicConfig.preset("tiny", VOCAB.size)
    train_config = replace(PROFILES["tiny"], steps=24, checkpoint_every=8, valid_every=8)
    train(tmp_path / "straight", *paths, model_config, train_config)

    progress = None
    with monkeypatch.context() as patch:
        if where == "after the weights":  # step 16's weights are written, not its state
            real_save, saves = checkpoint.save_model, []

            def save_model_then_die(directory, model, config):
                real_save(directory, model, config)
                saves.append(directory)
                if len(saves) == 2:  # step 8's checkpoint, then step 16's
                    raise Killed

            patch.setattr(checkpoint, "save_model", save_model_then_die)
        elif where == "while moving files in":  # step 16 committed, two of its files moved
            real_replace, moves = os.replace, []

            def replace_then_die(src, dst):
                source = Path(src)  # temp files of atomic writes start with "."
                if source.parent.name == checkpoint.PENDING_DIR and source.name[0] != ".":
                    moves.append(source.name)
                    if len(moves) == 6 + 3:  # 6 files a checkpoint; step 8's, then 2 of 16's
                        raise Killed
                real_replace(src, dst)

            patch.setattr(checkpoint.os, "replace", replace_then_die)
        else:

            def progress(fraction: float) -> None:  # right after the last checkpoint
                if fraction == 1.0:
                    raise Killed

        with pytest.raises(Killed):
            train(tmp_path / "killed", *paths, model_config, train_config, progress)
    resumed = train(tmp_path / "killed", *paths, model_config, train_config)
    assert resumed["finished"]
    assert not (tmp_path / "killed" / checkpoint.PENDING_DIR).exists()
    assert _run_files(tmp_path / "killed") == _run_files(tmp_path / "straight")


def test_a_finished_run_keeps_the_weights_of_its_best_validation(symbolic, tmp_path, monkeypatch):
    """Validation at steps 8, 16, 24 scores 3.0, 2.0, 2.5: the finished run's model is step
    16's, whether or not the run was stopped and resumed on the way."""
    import models.symbolic.train as music_train

    paths = symbolic / "tokens" / "train.parquet", symbolic / "tokens" / "valid.parquet"
    model_config = MusicConfig.preset("tiny", VOCAB.size)
    train_config = replace(
        PROFILES["tiny"], steps=24, log_every=4, checkpoint_every=12, valid_every=8
    )
    scripted = {8: 3.0, 16: 2.0, 24: 2.5}
    done = [0]  # the last step `progress` reported; validation comes in the step after it

    def progress(fraction: float) -> None:
        done[0] = round(fraction * train_config.steps)

    monkeypatch.setattr(
        music_train, "evaluate", lambda *args, **kwargs: {"nll": scripted[done[0] + 1]}
    )
    result = train(tmp_path / "straight", *paths, model_config, train_config, progress)
    assert (result["best_step"], result["best_valid_nll"]) == (16, 2.0)
    done[0] = 0
    train(tmp_path / "at16", *paths, model_config, train_config, progress, stop_at=16)
    step16 = (tmp_path / "at16" / "model.safetensors").read_bytes()
    straight = tmp_path / "straight"
    assert (straight / "model.safetensors").read_bytes() == step16
    assert (straight / music_train.BEST_FILE).read_bytes() == step16
    state = json.loads((straight / "train_state.json").read_text())["extra"]
    assert state["best"] == {"step": 16, "valid_nll": 2.0}
    valid = [r["valid_nll"] for r in pq.read_table(straight / "metrics.parquet").to_pylist()]
    assert [v for v in valid if v is not None] == [3.0, 2.0, 2.5]

    done[0] = 0
    train(tmp_path / "resumed", *paths, model_config, train_config, progress, stop_at=20)
    done[0] = 20
    resumed = train(tmp_path / "resumed", *paths, model_config, train_config, progress)
    assert resumed["best_step"] == 16
    assert _run_files(tmp_path / "resumed") == _run_files(straight)


def test_a_run_begun_before_a_new_training_field_still_resumes(symbolic, tmp_path):
    """A train_config.json written before a TrainConfig field existed resumes with that
    field's default; a changed setting is still refused."""
    paths = symbolic / "tokens" / "train.parquet", symbolic / "tokens" / "valid.parquet"
    model_config = MusicConfig.preset("tiny", VOCAB.size)
    train_config = replace(PROFILES["tiny"], steps=16, checkpoint_every=8)
    train(tmp_path / "run", *paths, model_config, train_config, stop_at=8)
    saved_path = tmp_path / "run" / "train_config.json"
    saved = json.loads(saved_path.read_text())
    del saved["init_from"]  # as written before fine-tuning existed
    saved_path.write_text(json.dumps(saved))
    assert train(tmp_path / "run", *paths, model_config, train_config)["resumed_from"] == 8
    with pytest.raises(ValueError, match="holds a run with other settings"):
        train(tmp_path / "run", *paths, model_config, replace(train_config, lr=0.5))
