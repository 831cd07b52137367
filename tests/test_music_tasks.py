"""The music tasks inside a flow, on a tiny corpus: artifacts, metrics and rendered outputs."""

from __future__ import annotations

import json
from pathlib import Path

import soundfile
import torch
from music_corpus import write_symbolic
from prefect import flow

from tasks.music import evaluate_music_model, generate_music, train_music_model

torch.set_num_threads(1)


@flow
def tiny_music_flow(data_dir: str) -> dict:
    trained = train_music_model(data_dir, "tiny", 0)
    metrics = evaluate_music_model(data_dir, trained["run_dir"])
    outputs = generate_music(
        data_dir, trained["run_dir"], "pachelbel", prompt_bars=2, length=40, top_k=20, seed=1
    )
    return {"trained": trained, "metrics": metrics, "outputs": outputs}


def test_train_evaluate_generate(prefect_harness, tmp_path):
    write_symbolic(tmp_path)
    result = tiny_music_flow(str(tmp_path))
    run_dir = Path(result["trained"]["run_dir"])
    assert run_dir == tmp_path / "models" / "music" / "tiny-seed0"
    assert result["trained"]["finished"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert result["metrics"]["test_nll"] == metrics["test_nll"]
    outputs = result["outputs"]
    for key in ("midi", "wav", "png"):
        assert Path(outputs[key]).parent == tmp_path / "reports"
    audio, rate = soundfile.read(outputs["wav"])
    assert rate == 16000 and len(audio) > rate and abs(audio).max() > 0.001
