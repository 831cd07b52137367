"""The models shipped in models/pretrained/, made by the project's own flows with one command.

    make pretrained                                    # both, as shipped (hours on 2 cores)
    python -m flows.pretrained --names jsb             # one of them
    python -m flows.pretrained --names music21 --data-dir data

- `jsb`: the JSB benchmark (`symbolic-jsb-benchmark`) with the shipped recipe in two stages
  (`models.symbolic.jsb.SHIPPED_RECIPE`: training chorales in every key they fit, dropout 0.2,
  4,000 steps of the `full` profile; then `SHIPPED_RESTART` from its weights: 1,000 more steps
  on a second cosine schedule at a third of the rate), scored on Coconet's valid and test
  splits.
- `music21`: the symbolic flow on `--corpus music21` at the `full` profile (data, train,
  evaluate: NLL beside the baselines and the musicality study of held-out prompts).
- `superres-x4-16k`: the audio flow on real speech, real music and the chorale renders
  (`SUPERRES_CORPUS`) at 4 -> 16 kHz with a random anti-aliasing filter per file: the spectral
  model (`--arch bwe`) at the `full` profile, beside it a U-Net in two stages
  (`SUPERRES_UNET_STAGES`), and the gate that routes each input to one of them, fitted on the
  training files and its threshold chosen on the validation files (`models.audio.gated`); the
  gated model evaluated per part and on unseen filters. `--superres spectral` builds the
  spectral model alone (the shipped model up to 2026-12-04).

Runs live under `data_dir` and resume from their checkpoints, so a killed build picks up where
it stopped. A model replaces the shipped one only when its headline number (JSB valid NLL, the
music21 model's test NLL, the super-resolution model's test LSD) is better, unless `--force`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from pydantic import Field

from flows.audio import AudioParams, audio_flow
from flows.cli import run_cli
from flows.params import FlowParams, Profile
from flows.symbolic import SymbolicParams, symbolic_flow
from models.symbolic.jsb import SHIPPED_RECIPE, SHIPPED_RESTART
from tasks.audio_model import gate_audio_models
from tasks.pretrained import export_jsb_model, export_music21_model, export_superres_model
from tasks.symbolic_model import jsb_benchmark

PretrainedName = Literal["jsb", "music21", "superres-x4-16k"]
DEFAULT_JSB = "../shared/data/jsb/Jsb16thSeparated.json"
# What the shipped super-resolution model learns from: real speech, real music, the renders.
SUPERRES_CORPUS = "recordings-speech+recordings-music+bach"
# The gated model's U-Net (`--superres gated`, `models.audio.gated`): the `narrow` preset
# (as fast as the spectral model in bfloat16), in two stages: on the renders alone, the
# input's band below 1.5 kHz kept; then from its weights on every part in equal shares at a
# third of the rate, so it errs less on recordings the gate sends it by mistake
# (docs/AUDIO_MODEL.md, 2026-12-04). Other profiles keep their own steps and rates.
PREVIOUS_STAGE = "<the previous stage>"
SUPERRES_UNET_STAGES: tuple[dict[str, Any], ...] = (
    {"preset": "narrow", "train_parts": ["bach"], "keep_below": 0.75, "train_steps": 4500},
    {
        "preset": "narrow",
        "init_from": PREVIOUS_STAGE,
        "lr": 3e-4,
        "part_exponent": 0.0,
        "train_steps": 1000,
    },
)


class PretrainedParams(FlowParams):
    profile: Profile = Field("full", description="Training profile (shipped models: full)")
    names: list[PretrainedName] = Field(
        default_factory=lambda: ["jsb", "music21", "superres-x4-16k"],
        description="Models to build",
    )
    out_dir: str = Field("models/pretrained", description="Where shipped models go")
    jsb: str = Field(DEFAULT_JSB, description="Coconet-format Jsb16thSeparated.json")
    force: bool = Field(False, description="Replace shipped models even when not better")
    superres: Literal["spectral", "gated"] = Field(
        "gated",
        description="superres-x4-16k as shipped (gated: the spectral model, a U-Net and the gate "
        "that routes each input to one of them), or spectral: the spectral model alone",
    )


def command_line(params: PretrainedParams, name: str) -> str:
    """The command that rebuilds model `name` with these parameters."""
    options = [f"--names {name}", f"--seed {params.seed}"]
    if params.profile != "full":
        options.append(f"--profile {params.profile}")
    if name == "jsb" and params.jsb != DEFAULT_JSB:
        options.append(f"--jsb {params.jsb}")
    if name == "superres-x4-16k" and params.superres != "gated":
        options.append(f"--superres {params.superres}")
    # How it trained, where data-parallel (the JSB model always trains in one process).
    if name != "jsb" and params.launch().world_size > 1:
        options.append(f"--nproc-per-node {params.nproc_per_node} --nnodes {params.nnodes}")
    return "python -m flows.pretrained " + " ".join(options)


@flow(name="pretrained")
def pretrained_flow(params: PretrainedParams = PretrainedParams()) -> dict[str, Any]:
    """Train, score and export the shipped models (see the module docstring)."""
    out = Path(params.out_dir)
    results: dict[str, Any] = {}
    if "jsb" in params.names:
        if params.launch().world_size > 1:
            get_run_logger().info("the JSB model trains in one process (not data-parallel)")
        # Two stages (`SHIPPED_RECIPE`, then `SHIPPED_RESTART` from its weights); smaller
        # profiles (smoke runs, tests) keep their own step counts and rates.
        first, restart = SHIPPED_RECIPE, SHIPPED_RESTART
        if params.profile != "full":
            first = dataclasses.replace(first, steps=None)
            restart = dataclasses.replace(restart, steps=None, lr=None, warmup=None)
        stage = jsb_benchmark(params.jsb, params.data_dir, params.profile, params.seed, first)
        restart = dataclasses.replace(restart, init_from=stage["run_dir"])
        jsb = jsb_benchmark(params.jsb, params.data_dir, params.profile, params.seed, restart)
        results["jsb"] = export_jsb_model(
            jsb, str(out / "jsb"), command_line(params, "jsb"), params.force
        )
    if "music21" in params.names:
        corpus_params = SymbolicParams(
            data_dir=str(Path(params.data_dir) / "pretrained-music21"),
            corpus="music21",
            profile=params.profile,
            seed=params.seed,
            workers=params.workers,
            stages=["data", "train", "evaluate"],
            **params.training_fields(),
            # 15,000 pieces: the original keys already give 1.5 M tokens per split.
            eval_keys="original",
        )
        trained = symbolic_flow(corpus_params).model_dump(mode="json")
        results["music21"] = export_music21_model(
            trained, str(out / "music21"), command_line(params, "music21"), params.force
        )
    if "superres-x4-16k" in params.names:
        audio_params = AudioParams(
            data_dir=str(Path(params.data_dir) / "pretrained-superres"),
            corpus=SUPERRES_CORPUS,
            profile=params.profile,
            seed=params.seed,
            workers=params.workers,
            stages=["data", "train"]
            if params.superres == "gated"
            else ["data", "train", "evaluate"],
            hr_rate=16000,
            ratio=4,
            filter="random",
            arch="bwe",
            **params.training_fields(),
        )
        trained = audio_flow(audio_params).model_dump(mode="json")
        if params.superres == "gated":
            trained = gated_superres(params, audio_params, trained)
        results["superres-x4-16k"] = export_superres_model(
            trained,
            SUPERRES_CORPUS,
            str(out / "superres-x4-16k"),
            command_line(params, "superres-x4-16k"),
            params.force,
        )
    return results


def stage_fields(params: PretrainedParams, stage: dict[str, Any], previous: str) -> dict[str, Any]:
    """A recipe stage's flow fields: `init_from` the previous run where it says so; at other
    profiles than `full` (smoke runs, tests) without its steps and rate."""
    if params.profile != "full":
        stage = {k: v for k, v in stage.items() if k not in ("train_steps", "lr")}
    if stage.get("init_from") == PREVIOUS_STAGE:
        stage = stage | {"init_from": previous}
    return stage


def gated_superres(
    params: PretrainedParams, audio_params: AudioParams, spectral: dict[str, Any]
) -> dict[str, Any]:
    """The gated model (`models.audio.gated`) of the spectral run `spectral`: the U-Net's
    stages (`SUPERRES_UNET_STAGES`), the gate fitted between them, the gated model evaluated;
    the audio flow's result for the export, naming every run that trained a network."""
    unet_runs: list[str] = []
    for stage in SUPERRES_UNET_STAGES:
        fields = stage_fields(params, stage, unet_runs[-1] if unet_runs else "")
        unet = audio_params.model_copy(update={"arch": "unet", "stages": ["train"], **fields})
        unet_runs.append(audio_flow(unet).run_dir)
    gated = gate_audio_models(audio_params.data_dir, spectral["run_dir"], unet_runs[-1])
    audio_flow(audio_params.model_copy(update={"stages": ["evaluate"], "model": gated["run_dir"]}))
    return spectral | {
        "run_dir": gated["run_dir"],
        "network_runs": [spectral["run_dir"], *unet_runs],
    }


def main() -> None:
    run_cli(pretrained_flow, PretrainedParams)


if __name__ == "__main__":
    main()
