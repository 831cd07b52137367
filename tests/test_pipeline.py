"""The pipeline flow: parameters, the run report, and incremental re-runs on real files."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pipeline_corpus import write_corpora, write_midi_corpus, write_wav_corpus
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from datasets.io import manifest_row, write_manifest
from datasets.stamps import flow_key
from flows.audio import AudioParams
from flows.pipeline import PipelineParams, pipeline_flow, subflow_params
from flows.symbolic import SymbolicParams
from models.report import (
    MAX_EMBEDDED_PNG_BYTES,
    flatten,
    long_rows,
    metric_rows,
    output_rows,
    png_markdown,
    rejected_rows,
    report_markdown,
    report_pngs,
    result_tables,
    significant,
)

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="
)


def test_shared_fields_override_and_stages_are_split_per_flow():
    params = PipelineParams(
        data_dir="/tmp/d",
        profile="full",
        seed=7,
        stages=["data", "generate", "superres"],
        task_runner="dask",
        workers=3,
        symbolic=SymbolicParams(corpus="/c", data_dir="ignored", limit=5),
        audio=AudioParams(corpus="bytebeat", ratio=2),
    )
    symbolic = subflow_params(params, params.symbolic)
    audio = subflow_params(params, params.audio)
    assert (symbolic.corpus, symbolic.limit, symbolic.data_dir) == ("/c", 5, "/tmp/d")
    assert (symbolic.profile, symbolic.seed, symbolic.workers) == ("full", 7, 3)
    assert symbolic.stages == ["data", "generate"]
    assert (audio.corpus, audio.ratio, audio.task_runner) == ("bytebeat", 2, "dask")
    assert audio.stages == ["data", "superres"]


def test_params_round_trip_as_deployment_json():
    """Deployments store parameters as JSON; the nested models must survive the trip."""
    params = PipelineParams(symbolic=SymbolicParams(corpus="/c"), run_audio=False)
    assert PipelineParams.model_validate(params.model_dump(mode="json")) == params


def test_flatten_and_metric_rows_keep_finite_numbers_only():
    results = {
        "symbolic": SymbolicParams(corpus="/c"),
        "audio": {"loss": [0.5, float("nan")], "ok": True, "nested": {"snr": 12.25}},
    }
    assert flatten({"a": {"b": [1, {"c": 2}]}}) == {"a.b.0": 1, "a.b.1.c": 2}
    rows = metric_rows(results)
    assert {"flow": "audio", "metric": "nested.snr", "value": 12.25} in rows
    assert {"flow": "audio", "metric": "loss.0", "value": 0.5} in rows
    assert not [r for r in rows if r["metric"] in {"ok", "loss.1"}]
    assert {"flow": "symbolic", "metric": "seed", "value": 0} in rows
    assert rows == sorted(rows, key=lambda r: r["flow"])


def test_rejected_rows_read_both_manifests(tmp_path: Path):
    write_manifest(
        tmp_path / "symbolic" / "manifest.parquet",
        [
            manifest_row("a.mid", "0" * 64, 10, "ok"),
            manifest_row("b.mid", "1" * 64, 3, "rejected", "not a MIDI file"),
        ],
    )
    write_manifest(
        tmp_path / "audio" / "manifest.parquet",
        [manifest_row("c.wav", "2" * 64, 4, "rejected", "no audio frames")],
    )
    assert rejected_rows(tmp_path) == [
        {"corpus": "symbolic", "path": "b.mid", "reason": "not a MIDI file"},
        {"corpus": "audio", "path": "c.wav", "reason": "no audio frames"},
    ]


def test_pngs_are_embedded_as_data_uris_unless_too_big(tmp_path: Path):
    small = tmp_path / "reports" / "roll.png"
    small.parent.mkdir(parents=True)
    small.write_bytes(PNG_1X1)
    assert png_markdown(small, "roll") == (
        f"![roll](data:image/png;base64,{base64.b64encode(PNG_1X1).decode()})"
    )
    big = tmp_path / "reports" / "big.png"
    big.write_bytes(PNG_1X1 + bytes(MAX_EMBEDDED_PNG_BYTES))
    assert "not embedded" in png_markdown(big, "big")
    text = report_markdown(
        "t", tmp_path, {}, {}, [{"flow": "f", "metric": "m|x", "value": 0.123456}], [], [], [small]
    )
    assert "| f | m\\|x | 0.123 |" in text
    assert "**reports/roll.png**" in text
    assert "data:image/png;base64," in text


def test_significant_digits():
    assert significant(0.0012345) == 0.00123
    assert significant(23.114) == 23.1
    assert significant(-1234.5) == -1230
    assert significant(0.99951) == 1.0
    assert significant(0.0) == 0.0
    # A table shows all three digits, trailing zeros included.
    text = report_markdown(
        "t", Path("d"), {}, {"audio": [{"model": "m", "SNR": 11.955}]}, *[[]] * 4
    )
    assert "| m | 12.0 |" in text


def write_evaluated_results(data_dir: Path) -> dict:
    """Flow results as the evaluate stages leave them: each names its metrics.json."""
    music = data_dir / "models" / "music" / "quick-seed0"
    audio = data_dir / "models" / "audio" / "quick-x4"
    scores = {"test_nll": 0.94321, "test_ppl": 2.56822, "test_accuracy": 0.684444}
    music_metrics = {
        **scores,
        "baselines": {
            "ngram": {"test_nll": 1.4371, "test_ppl": 4.2087, "test_accuracy": 0.53512},
            "vanilla_transformer": {"test_nll": 1.1449, "test_ppl": 3.142, "test_accuracy": 0.6},
        },
    }
    audio_metrics = {
        "snr_db": 23.114,
        "lsd": 0.90451,
        "lsd_hf": 1.0349,
        "baselines": {
            "spline": {"snr_db": 11.7412, "lsd": 3.0012, "lsd_hf": 3.4321},
            "sinc": {"snr_db": 11.9649, "lsd": 3.6311, "lsd_hf": 4.1587},
        },
    }
    for run_dir, metrics in ((music, music_metrics), (audio, audio_metrics)):
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return {
        "symbolic": {
            "n_pieces": 24,
            "run_dir": str(music),
            "metrics": {"metrics": str(music / "metrics.json"), "test_nll": 0.94321},
        },
        "audio": {
            "n_files": 24,
            "run_dir": str(audio),
            "metrics": {"metrics": str(audio / "metrics.json")},
        },
    }


def test_report_leads_with_results_then_bookkeeping_with_relative_paths(tmp_path: Path):
    data_dir = tmp_path / "data"
    results = write_evaluated_results(data_dir)
    tables = result_tables(results)
    assert [row["model"] for row in tables["symbolic"]] == [
        "music Transformer (ours)",
        "vanilla Transformer",
        "n-gram",
    ]
    assert tables["symbolic"][0] == {
        "model": "music Transformer (ours)",
        "test NLL": 0.943,
        "perplexity": 2.57,
        "accuracy": 0.684,
    }
    assert [row["model"] for row in tables["audio"]] == [
        "super-resolution model (ours)",
        "spline",
        "sinc",
    ]
    assert tables["audio"][1] == {"model": "spline", "SNR (dB)": 11.7, "LSD": 3.0, "LSD-HF": 3.43}
    assert {"flow": "audio", "model": "sinc", "metric": "LSD", "value": 3.63} in long_rows(tables)

    outputs = output_rows(results, data_dir)
    assert {"flow": "symbolic", "output": "run_dir", "path": "models/music/quick-seed0"} in outputs
    text = report_markdown(
        "pipeline run report",
        data_dir,
        {"profile": "quick", "seed": 7},
        tables,
        metric_rows(results),
        outputs,
        [],
        [],
    )
    assert text.index("## Results") < text.index("## Outputs") < text.index("bookkeeping")
    assert "profile `quick` · seed `7`" in text.splitlines()[2]
    assert "| music Transformer (ours) | 0.943 | 2.57 | 0.684 |" in text
    assert "| super-resolution model (ours) | 23.1 | 0.905 | 1.03 |" in text
    assert str(tmp_path) not in text.replace(f"`{data_dir}`", "")


def test_report_pngs_put_this_runs_first(tmp_path: Path):
    (tmp_path / "reports").mkdir()
    older = tmp_path / "reports" / "a-old.png"
    mine = tmp_path / "elsewhere" / "z-mine.png"
    mine.parent.mkdir()
    for path in (older, mine):
        path.write_bytes(PNG_1X1)
    results = {"audio": {"plot": str(mine), "missing": str(tmp_path / "gone.png")}}
    assert report_pngs(tmp_path, results) == [mine.resolve(), older.resolve()]


def run_data(tmp_path: Path, midi: Path, wav: Path) -> dict:
    """One `--stages data` pipeline run; its result plus the keys of the run's artifacts."""
    params = PipelineParams(
        data_dir=str(tmp_path / "data"),
        stages=["data"],
        symbolic=SymbolicParams(corpus=str(midi)),
        audio=AudioParams(corpus=str(wav), patch=4096),
    )
    state = pipeline_flow(params, return_state=True)
    assert state.is_completed(), state.message
    return state.result() | {"artifacts": artifact_keys(state.state_details.flow_run_id)}


def artifact_keys(flow_run_id) -> set[str]:
    with get_client(sync_client=True) as client:
        flow_run_filter = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        return {a.key for a in client.read_artifacts(artifact_filter=flow_run_filter)}


def test_rerun_reuses_everything_and_a_new_file_is_processed_alone(prefect_harness, tmp_path):
    midi, wav = write_corpora(tmp_path / "corpus", n_pieces=3)
    first_run = run_data(tmp_path, midi, wav)
    expected = {"pipeline-report", "pipeline-results", "pipeline-metrics", "pipeline-rejected"}
    assert expected <= first_run["artifacts"]
    first = first_run["results"]
    assert (first["symbolic"]["n_parsed"], first["symbolic"]["n_rejected"]) == (4, 1)
    assert (first["audio"]["n_loaded"], first["audio"]["n_rejected"]) == (3, 1)
    assert not first["symbolic"]["flow_reused"]
    assert not first["audio"]["flow_reused"]

    # Nothing changed: neither flow runs; the recorded results come back.
    second = run_data(tmp_path, midi, wav)
    assert second["results"]["symbolic"] == first["symbolic"] | {"flow_reused": True}
    assert second["results"]["audio"] == first["audio"] | {"flow_reused": True}
    assert second["report"]["rejected"] == 2

    # An output deleted: the flow runs again, every file comes from its per-file cache.
    (tmp_path / "data" / "symbolic" / "notes.parquet").unlink()
    third = run_data(tmp_path, midi, wav)["results"]
    assert not third["symbolic"]["flow_reused"]
    assert third["audio"]["flow_reused"]
    assert (third["symbolic"]["n_parsed"], third["symbolic"]["n_parse_reused"]) == (0, 4)
    assert (tmp_path / "data" / "symbolic" / "notes.parquet").is_file()

    # One file added to each corpus: only that file is parsed / loaded.
    new_midi = write_midi_corpus(midi, 1, start=3)
    write_wav_corpus(wav, new_midi)
    fourth = run_data(tmp_path, midi, wav)["results"]
    assert (fourth["symbolic"]["n_parsed"], fourth["symbolic"]["n_ok"]) == (1, 4)
    assert (fourth["audio"]["n_loaded"], fourth["audio"]["n_ok"]) == (1, 4)


def test_flow_key_follows_content_parameters_and_code(tmp_path: Path):
    corpus = tmp_path / "corpus"
    write_midi_corpus(corpus, 2)
    params = SymbolicParams(corpus=str(corpus))
    key = flow_key(params, "code-a")
    assert (
        flow_key(params.model_copy(update={"task_runner": "dask", "workers": 8}), "code-a") == key
    )
    assert flow_key(params.model_copy(update={"seed": 1}), "code-a") != key
    assert flow_key(params, "code-b") != key
    (corpus / "piece_000.mid").write_bytes((corpus / "piece_001.mid").read_bytes())
    assert flow_key(params, "code-a") != key
    builtin = SymbolicParams(corpus="bach")
    assert flow_key(builtin, "code-a") == flow_key(builtin, "code-a")


@pytest.mark.slow
def test_quick_profile_end_to_end(prefect_harness, tmp_path):
    """The whole quick pipeline on tiny corpora: every stage runs and reports."""
    midi, wav = write_corpora(tmp_path / "corpus", n_pieces=4)
    params = PipelineParams(
        data_dir=str(tmp_path / "data"),
        symbolic=SymbolicParams(corpus=str(midi)),
        audio=AudioParams(corpus=str(wav), patch=4096),
    )
    result = pipeline_flow(params)
    assert result["report"]["artifacts"]["report"] == "pipeline-report"


def test_a_failing_flow_fails_the_run_but_the_other_is_reported(prefect_harness, tmp_path):
    midi, _ = write_corpora(tmp_path / "corpus", n_pieces=2)
    params = PipelineParams(
        data_dir=str(tmp_path / "data"),
        stages=["data"],
        symbolic=SymbolicParams(corpus=str(midi)),
        audio=AudioParams(corpus=str(tmp_path / "no-such-corpus")),
    )
    state = pipeline_flow(params, return_state=True)
    assert state.is_failed()
    assert "no-such-corpus" in state.message
    assert {"pipeline-report", "pipeline-rejected"} <= artifact_keys(
        state.state_details.flow_run_id
    )
    assert (tmp_path / "data" / "symbolic" / "tokens").is_dir()


@pytest.mark.slow
def test_dask_pipeline_matches_threads(prefect_harness, tmp_path):
    """`--task-runner dask`: both flows share one 2-worker LocalCluster; same outputs."""
    midi, wav = write_corpora(tmp_path / "corpus", n_pieces=3)
    counts = []
    for runner in ("threads", "dask"):
        params = PipelineParams(
            data_dir=str(tmp_path / runner),
            stages=["data"],
            task_runner=runner,
            workers=2,
            symbolic=SymbolicParams(corpus=str(midi), batch_size=2),
            audio=AudioParams(corpus=str(wav), patch=4096, batch_size=2),
        )
        results = pipeline_flow(params)["results"]
        counts.append(
            {
                flow: {k: v for k, v in r.items() if k.startswith("n_")}
                for flow, r in results.items()
            }
        )
    assert counts[0] == counts[1]
    for name in ("symbolic/notes.parquet", "audio/files.parquet"):
        assert (tmp_path / "threads" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes()
