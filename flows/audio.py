"""The audio super-resolution flow: corpus -> pairs -> U-Net -> metrics and super-resolved audio.

Later stages read what `data` wrote under `data_dir`: `train` (the U-Net), `evaluate` (SNR/LSD
against the spline and sinc baselines on the held-out files), `superres` (examples from the test
split, or the file given by `--input`), and `mismatch` (the filter-mismatch study; not run by
default). Each stage is self-contained, so any subset can run.

    python -m flows.audio --help
    python -m flows.audio --corpus bach --profile quick --ratio 4 --filter soxr
    python -m flows.audio --corpus bytebeat --bits 8
    python -m flows.audio --input song.wav --output song-x4.wav
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar, Literal

from prefect import flow, get_run_logger
from pydantic import Field, model_validator

from datasets.audio.corpus import RECORDINGS_PREFIX, corpus_parts
from datasets.audio.pairs import PairSpec
from datasets.inventory import batches
from flows.cli import parse_params, run_cli
from flows.params import CorpusParams, CorpusResult
from models.audio.config import PRESETS, QUICK_LIMIT
from tasks.audio import (
    discover_task,
    load_task,
    pairs_task,
    signal_report_task,
    split_task,
    write_task,
)
from tasks.audio_model import (
    evaluate_audio_model,
    filter_mismatch,
    resolve_model,
    superresolve,
    superresolve_demos,
    superresolve_examples,
    superresolve_file_task,
    train_audio_model,
)

Stage = Literal["data", "train", "evaluate", "superres", "mismatch"]


class AudioParams(CorpusParams):
    QUICK_LIMIT: ClassVar[int] = QUICK_LIMIT
    BUILTIN_CORPORA: ClassVar[frozenset[str]] = frozenset(
        {"bach", "bytebeat", "recordings-speech", "recordings-music"}
    )

    corpus: str = Field(
        "bach",
        description="'bach' (the chorales rendered by FluidSynth), 'bytebeat' (built-in "
        "formulas), 'recordings-speech' or 'recordings-music' (real recordings fetched from "
        "Debian and npm packages), a .txt of formulas (one per line), a directory of audio "
        "files, or several of these joined by '+' (recordings-speech+recordings-music+bach)",
    )
    split_by: Literal["file", "dir"] | None = Field(
        None,
        description="file: each file on its own; dir: the files of each top directory (a "
        "speaker, a song) share a split; none: dir for the recordings, file otherwise",
    )
    stages: list[Stage] = Field(
        default_factory=lambda: ["data", "train", "evaluate", "superres"],
        description="Stages to run, in pipeline order",
    )
    limit: int | None = Field(None, ge=1, description="Most files (chorales) to use; none: all")
    hr_rate: int = Field(16000, ge=1000, description="High-resolution sample rate (Hz)")
    ratio: Literal[2, 3, 4, 6, 8] = Field(4, description="Decimation ratio hr_rate / lr_rate")
    filter: Literal["soxr", "cheby", "fir", "none", "random"] = Field(
        "soxr",
        description="Anti-aliasing filter before decimation: soxr (HQ), cheby (order-8 "
        "Chebyshev I), fir (Kaiser polyphase), none (aliased x[::r]), random (one per file)",
    )
    bits: int | None = Field(
        None, ge=1, le=24, description="Quantize the low-res signal with a SAR ADC of N bits"
    )
    patch: int = Field(
        8192,
        ge=8,
        description="Patch length in hr samples; a multiple of ratio and of what the U-Net "
        "needs (2**depth * ratio)",
    )
    stride: int | None = Field(None, ge=1, description="Hop between patches; none: = patch")
    silence_rms: float = Field(
        1e-3, ge=0, description="Patches whose hr RMS is below this are dropped (and counted)"
    )
    program: int = Field(
        0, ge=0, le=127, description="General MIDI program of the Bach renders (0: piano)"
    )
    max_file_bytes: int = Field(
        2_000_000_000, ge=1, description="Files larger than this are rejected unread"
    )
    max_seconds: float | None = Field(
        3600.0, gt=0, description="Files longer than this are rejected; none: no limit"
    )
    batch_size: int = Field(16, ge=1, description="Files per load / pairs task")
    arch: Literal["unet", "bwe"] = Field(
        "unet",
        description="unet: the paper's U-Net on samples; bwe: the spectral bandwidth extender "
        "(AP-BWE-style amplitude and phase streams, light on a CPU)",
    )
    train_steps: int | None = Field(
        None,
        ge=1,
        description="Training steps; none: the profile's (tiny 30, quick 100, full 4000; "
        "the spectral model's full 20000)",
    )
    preset: str | None = Field(
        None,
        description="Model size: a preset of --arch in place of the profile's (narrow: the "
        "U-Net at half the full preset's widths, the gated model's U-Net); the run is named "
        "<profile>-<preset>-...",
    )
    init_from: str | None = Field(
        None,
        description="Fine-tune: start training from this model directory's weights (a run, "
        "or models/pretrained/superres-x4-16k: its network of --arch); its architecture and "
        "sizes are kept and the run is named ...-from-<directory>",
    )
    keep_below: float | None = Field(
        None,
        gt=0,
        le=1,
        description="U-Net: the output keeps the input's own band below this share of its "
        "Nyquist frequency (the network's residual high-passed there; 0.75: the band every "
        "anti-aliasing filter passes whole); none: the model's own",
    )
    train_parts: list[str] | None = Field(
        None,
        description="Train on these parts of a mixed corpus only (bach, recordings-speech, "
        "recordings-music); none: all",
    )
    lr: float | None = Field(
        None, gt=0, description="Peak learning rate; none: the profile's (full: 1e-3)"
    )
    part_exponent: float | None = Field(
        None,
        description="How batches draw on a mixed corpus's parts: a part with n patches has "
        "weight n ** this (0: equal shares, 1: by size); none: the profile's",
    )
    input: str | None = Field(
        None,
        description="Super-resolve this audio file (any rate, any length) and run only the "
        "superres stage; a file holding a band between the model's input and output Nyquist "
        "frequencies (an 8 kHz file, or one resampled up from it) keeps its own band",
    )
    output: str | None = Field(
        None, description="Where --input's result goes; none: data_dir/reports/<stem>-sr.wav"
    )
    model: str | None = Field(
        None,
        description="Model run (a directory, or a run name under data_dir/models/audio) for "
        "--input; none: the latest trained run",
    )
    high_band_gain: float | None = Field(
        None,
        ge=0,
        le=1,
        description="For --input with the spectral model: the level of the band above the "
        "input's Nyquist frequency, replacing the calibrated one or the calibrated level per "
        "input (1: the trained level, brighter, lowest LSD; the calibration keeps the SNR at "
        "the spline's)",
    )

    @model_validator(mode="after")
    def _check_patch(self) -> AudioParams:
        self.pair_spec()  # refuses a patch or stride that is no multiple of the ratio
        return self

    @model_validator(mode="after")
    def _check_preset(self) -> AudioParams:
        if self.preset is not None:
            kinds = {"unet": [n for n in PRESETS if not n.startswith("bwe-")]}
            kinds["bwe"] = [n for n in PRESETS if n.startswith("bwe-")]
            if self.preset not in kinds[self.arch]:
                raise ValueError(
                    f"preset {self.preset!r} is not a size of --arch {self.arch}; choose from "
                    f"{kinds[self.arch]}"
                )
        return self

    def corpus_names(self) -> list[str]:
        return corpus_parts(self.corpus)

    def is_mix(self) -> bool:
        """Whether `corpus` joins several corpora (`a+b`)."""
        return len(self.corpus_names()) > 1

    def splits_by_dir(self) -> bool:
        """Whether the split keeps each top directory whole (`split_by`; default: yes when any
        part is a corpus of recordings)."""
        recordings = any(name.startswith(RECORDINGS_PREFIX) for name in self.corpus_names())
        default = "dir" if recordings else "file"
        return (self.split_by or default) == "dir"

    def pair_spec(self) -> PairSpec:
        return PairSpec(
            hr_rate=self.hr_rate,
            ratio=self.ratio,
            filter=self.filter,
            bits=self.bits,
            patch=self.patch,
            stride=self.stride or self.patch,
            silence_rms=self.silence_rms,
            seed=self.seed,
        )


class AudioResult(CorpusResult):
    files: str
    pairs_dir: str
    n_silent: int = 0
    hr_seconds: float = 0.0
    files_train: int = 0
    files_valid: int = 0
    files_test: int = 0
    pairs_train: int = 0
    pairs_valid: int = 0
    pairs_test: int = 0
    shards_train: int = 0
    shards_valid: int = 0
    shards_test: int = 0
    signal_report: str = ""
    n_loaded: int = 0
    n_load_reused: int = 0
    n_pairs_reused: int = 0
    examples: list[dict[str, Any]] = Field(default_factory=list)
    demos: list[dict[str, Any]] = Field(default_factory=list)
    superres: dict[str, Any] = Field(default_factory=dict)
    mismatch: dict[str, Any] = Field(default_factory=dict)


def data_stage(params: AudioParams) -> dict[str, Any]:
    """Corpus -> manifest, hr WAVs, files table and pair shards under `data_dir/audio`."""
    data_dir = str(params.data_dir)
    spec = params.pair_spec()
    entries = discover_task(
        params.corpus,
        data_dir,
        params.hr_rate,
        params.corpus_limit(),
        params.program,
        params.max_file_bytes,
    )
    load_futures = [
        load_task.submit(
            batch,
            data_dir,
            params.hr_rate,
            spec.patch,
            params.max_file_bytes,
            params.max_seconds,
        )
        for batch in batches(entries, params.batch_size, params.workers)
    ]
    loaded = [record for future in load_futures for record in future.result()]
    by_dir = params.splits_by_dir()
    splits = split_task(
        loaded, params.seed, params.valid_fraction, params.test_fraction, by_dir, params.is_mix()
    )
    spec_dict = dataclasses.asdict(spec)
    pair_futures = [
        pairs_task.submit(batch, data_dir, spec_dict)
        for batch in batches(loaded, params.batch_size, params.workers)
    ]
    records = [record for future in pair_futures for record in future.result()]
    summary = write_task(records, splits, data_dir, spec_dict)
    report = signal_report_task(data_dir, params.hr_rate)
    ok = [r for r in records if r["status"] == "ok"]
    return summary | {
        "signal_report": report,
        "n_loaded": sum(not r["reused"] for r in ok),
        "n_load_reused": sum(r["reused"] for r in ok),
        "n_pairs_reused": sum(r["pairs_reused"] for r in ok),
    }


@flow(name="audio")
def audio_flow(params: AudioParams = AudioParams()) -> AudioResult:
    """Audio super-resolution: a corpus to pairs, a U-Net, its metrics and super-resolved audio."""
    data_dir = params.data_dir
    requested = ["superres"] if params.input else params.stages
    stages = params.node_stages(requested)
    if stages != requested:
        get_run_logger().info("node %d of %d runs only %s", params.node_rank, params.nnodes, stages)
    result: dict[str, Any] = data_stage(params) if "data" in stages else {}
    if "train" in stages:
        trained = train_audio_model(
            data_dir,
            params.profile,
            params.seed,
            steps=params.train_steps,
            arch=params.arch,
            launch=params.launch(),
            compiled=params.compile,
            init_from=params.init_from,
            keep_below=params.keep_below,
            parts=params.train_parts,
            lr=params.lr,
            part_exponent=params.part_exponent,
            preset=params.preset,
        )
        result["run_dir"] = trained["run_dir"]
    if {"evaluate", "superres"} & set(stages) and "run_dir" not in result:
        result["run_dir"] = str(resolve_model(data_dir, params.model))
    run_dir = result.get("run_dir", "")
    if "evaluate" in stages:
        result["metrics"] = evaluate_audio_model(
            data_dir, run_dir, params.profile, by_source=params.is_mix()
        )
    if "superres" in stages:
        if params.input:
            result["superres"] = superresolve_file_task(
                params.input, params.output, data_dir, params.model, params.high_band_gain
            )
        else:
            result["examples"] = superresolve_examples(data_dir, run_dir)
            result["demos"] = superresolve_demos(data_dir)
    if "mismatch" in stages:
        result["mismatch"] = filter_mismatch(data_dir, params.profile, params.seed)
    outputs = {"files": "files.parquet", "pairs_dir": "pairs"}
    return AudioResult.under(data_dir, "audio", outputs, **result)


def main(argv: list[str] | None = None) -> None:
    """The command line. With `--input` (one file) it runs here, without a flow run or a
    Prefect server (seconds, not the tens a temporary server takes to start); everything else
    runs the flow."""
    description = (audio_flow.description or "").strip()
    params = parse_params(AudioParams, description, argv)
    if params.input:
        result = superresolve(
            params.input, params.output, str(params.data_dir), params.model, params.high_band_gain
        )
        print(json.dumps(result))
        return
    run_cli(audio_flow, AudioParams, argv)


if __name__ == "__main__":
    main()
