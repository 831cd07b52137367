"""Incremental runs of the whole pipeline, timed.

1. a cold run on N Bach chorales (MIDI for the symbolic flow, FluidSynth renders for audio);
2. the same run again, nothing changed: it must take under 5% of the first (neither flow
   runs: their recorded results come back, `flow_reused`);
3. one more chorale added to both corpora: both flows run, and only that file is parsed /
   loaded (`n_parsed`, `n_loaded`).

    .venv/bin/python bench/bench_rerun.py                 # 16 chorales, quick profile
    .venv/bin/python bench/bench_rerun.py --stages data   # the data stages only

Every run uses the same process and Prefect server (started before the clock), so the times
are the pipeline's own. Writes bench/out/rerun.json; exits 1 if the re-run is not under 5%.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from orchestration_corpus import (
    OUT,
    chorale_corpus,
    quiet_prefect,
    start_prefect,
    working_copy,
)

quiet_prefect()

from flows.audio import AudioParams  # noqa: E402
from flows.pipeline import PipelineParams, pipeline_flow  # noqa: E402
from flows.symbolic import SymbolicParams  # noqa: E402

TARGET = 0.05
COUNTS = {
    "symbolic": ("flow_reused", "n_ok", "n_parsed", "n_parse_reused"),
    "audio": ("flow_reused", "n_ok", "n_loaded"),
}


def timed_run(params: PipelineParams) -> tuple[float, dict]:
    start = time.perf_counter()
    result = pipeline_flow(params)
    return time.perf_counter() - start, result


def counts(result: dict) -> dict[str, int]:
    return {
        f"{flow}.{name}": result["results"][flow][name]
        for flow, names in COUNTS.items()
        if flow in result["results"]
        for name in names
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pieces", type=int, default=16, help="chorales in the first run")
    parser.add_argument("--profile", choices=["quick", "full"], default="quick")
    parser.add_argument("--stages", nargs="*", default=None, help="default: every stage")
    args = parser.parse_args()

    midi_all, wav_all = chorale_corpus(args.pieces + 1)
    stems = sorted(p.stem for p in midi_all.glob("*.mid"))[: args.pieces + 1]
    work = OUT / "rerun"
    midi = working_copy(midi_all, work / "midi", [f"{s}.mid" for s in stems[:-1]])
    wav = working_copy(wav_all, work / "wav", [f"{s}.wav" for s in stems[:-1]])
    shutil.rmtree(work / "data", ignore_errors=True)
    params = PipelineParams(
        data_dir=str(work / "data"),
        profile=args.profile,
        symbolic=SymbolicParams(corpus=str(midi)),
        audio=AudioParams(corpus=str(wav)),
        **({"stages": args.stages} if args.stages else {}),
    )
    start_prefect()

    runs = {}
    for name in ("first", "unchanged"):
        seconds, result = timed_run(params)
        runs[name] = {"seconds": round(seconds, 2), **counts(result)}
    shutil.copy2(midi_all / f"{stems[-1]}.mid", midi)
    shutil.copy2(wav_all / f"{stems[-1]}.wav", wav)
    seconds, result = timed_run(params)
    runs["one_file_added"] = {"seconds": round(seconds, 2), **counts(result)}

    ratio = runs["unchanged"]["seconds"] / runs["first"]["seconds"]
    summary = {
        "pieces": args.pieces,
        "profile": args.profile,
        "stages": params.stages,
        "runs": runs,
        "unchanged_over_first": round(ratio, 4),
        "target": TARGET,
    }
    (OUT / "rerun.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'run':<16}{'seconds':>9}  counts")
    for name, run in runs.items():
        rest = ", ".join(f"{k}={v}" for k, v in run.items() if k != "seconds")
        print(f"{name:<16}{run['seconds']:>9.2f}  {rest}")
    verdict = "OK" if ratio < TARGET else "TOO SLOW"
    print(f"unchanged / first = {ratio:.1%} (target < {TARGET:.0%}): {verdict}")
    return 0 if ratio < TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
