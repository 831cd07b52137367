"""Flow command lines generated from pydantic params models."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from flows.cli import build_parser, parse_params


class ExampleParams(BaseModel):
    data_dir: str = Field("data", description="where outputs go")
    profile: Literal["quick", "full"] = "quick"
    ratio: Literal[2, 4] = 4
    steps: int = 10
    rate: float = 0.5
    bits: int | None = None
    shuffle: bool = True
    stages: list[Literal["data", "train"]] = ["data", "train"]


def test_defaults_come_from_the_model():
    assert parse_params(ExampleParams, "", []) == ExampleParams()


def test_flags_are_typed_and_validated():
    params = parse_params(
        ExampleParams,
        "",
        [
            "--data-dir",
            "/tmp/x",
            "--profile",
            "full",
            "--ratio",
            "2",
            "--steps",
            "3",
            "--bits",
            "8",
            "--shuffle",
            "false",
            "--stages",
            "data",
        ],
    )
    assert params == ExampleParams(
        data_dir="/tmp/x", profile="full", ratio=2, steps=3, bits=8, shuffle=False, stages=["data"]
    )
    with pytest.raises(SystemExit):
        parse_params(ExampleParams, "", ["--profile", "large"])
    with pytest.raises(SystemExit):
        parse_params(ExampleParams, "", ["--steps", "many"])


def test_help_lists_every_field_with_its_description(capsys):
    with pytest.raises(SystemExit):
        build_parser(ExampleParams, "an example").parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--data-dir", "--profile", "--ratio", "--bits", "--stages", "where outputs go"):
        assert flag in text
