"""The music tasks inside a flow, on a tiny corpus: artifacts, metrics and rendered outputs."""

from __future__ import annotations

import json
from pathlib import Path

import soundfile
import torch
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from symbolic_corpus import write_symbolic

from tasks.symbolic_model import (
    evaluate_symbolic_model,
    generate_continuation,
    train_symbolic_baseline,
    train_symbolic_model,
)

torch.set_num_threads(1)


@flow
def tiny_music_flow(data_dir: str) -> dict:
    trained = train_symbolic_model(data_dir, "tiny", 0)
    baseline = train_symbolic_baseline(data_dir, trained["run_dir"], "tiny", 0)
    metrics = evaluate_symbolic_model(data_dir, trained["run_dir"])
    outputs = generate_continuation(
        data_dir, trained["run_dir"], "pachelbel", prompt_bars=2, length=40, top_k=20, seed=1
    )
    return {"trained": trained, "baseline": baseline, "metrics": metrics, "outputs": outputs}


def task_names(flow_run_id) -> set[str]:
    """The task names of a flow run's task runs, as the UI lists them."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {run.name.rsplit("-", 1)[0] for run in runs}


def test_train_evaluate_generate(prefect_harness, tmp_path):
    write_symbolic(tmp_path)
    state = tiny_music_flow(str(tmp_path), return_state=True)
    result = state.result()
    run_dir = Path(result["trained"]["run_dir"])
    assert run_dir == tmp_path / "models" / "music" / "tiny-seed0"
    assert result["trained"]["finished"]
    assert result["baseline"]["finished"]
    assert Path(result["baseline"]["run_dir"]) == run_dir / "baselines" / "vanilla_transformer"
    # The baseline trains under its own name in the logs and the UI, not inside the model's task.
    assert {"symbolic-train", "symbolic-train-baseline"} <= task_names(
        state.state_details.flow_run_id
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert result["metrics"]["test_nll"] == metrics["test_nll"]
    outputs = result["outputs"]
    for key in ("midi", "wav", "png"):
        assert Path(outputs[key]).parent == tmp_path / "reports"
    audio, rate = soundfile.read(outputs["wav"])
    assert rate == 16000
    assert len(audio) > rate
    assert abs(audio).max() > 0.001
