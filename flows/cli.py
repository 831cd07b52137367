"""Command lines for flows, generated from their pydantic parameter models.

Each flow takes one pydantic model (the Prefect UI renders it as a form); `run_cli` turns the
same model into `--flag` options, so `python -m flows.<name> --help` lists every typed parameter
with its default and description, and the two never drift apart.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings
from pydantic import BaseModel

from flows.runners import make_task_runner

ParamsT = TypeVar("ParamsT", bound=BaseModel)


def _unwrap_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_field(parser: argparse.ArgumentParser, name: str, field: Any) -> None:
    flag = "--" + name.replace("_", "-")
    annotation = _unwrap_optional(field.annotation)
    origin = typing.get_origin(annotation)
    default = field.get_default(call_default_factory=True)
    help_text = f"{field.description or ''} (default: {default!r})".strip()
    kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
    if origin is Literal:
        choices = list(typing.get_args(annotation))
        parser.add_argument(flag, choices=choices, type=type(choices[0]), **kwargs)
    elif annotation is bool:
        parser.add_argument(flag, type=_parse_bool, metavar="BOOL", **kwargs)
    elif origin in (list, tuple) or annotation in (list, tuple):
        item_type = (typing.get_args(annotation) or (str,))[0]
        if typing.get_origin(item_type) is Literal:
            choices = list(typing.get_args(item_type))
            parser.add_argument(flag, nargs="*", choices=choices, type=type(choices[0]), **kwargs)
        else:
            parser.add_argument(flag, nargs="*", type=item_type, **kwargs)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        parser.add_argument(flag, type=json.loads, metavar="JSON", **kwargs)
    elif annotation in (int, float, str, Path):
        parser.add_argument(flag, type=annotation, **kwargs)
    else:
        parser.add_argument(flag, type=str, **kwargs)


def build_parser(params_model: type[BaseModel], description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for name, field in params_model.model_fields.items():
        _add_field(parser, name, field)
    return parser


def parse_params(
    params_model: type[ParamsT], description: str, argv: Sequence[str] | None = None
) -> ParamsT:
    namespace = build_parser(params_model, description).parse_args(argv)
    return params_model(**vars(namespace))


def run_cli(
    flow_fn: Callable[[ParamsT], Any],
    params_model: type[ParamsT],
    argv: Sequence[str] | None = None,
    *,
    own_task_runner: bool = True,
) -> Any:
    """Parse the command line into `params_model`, run the flow, and print its result (where
    the outputs are, the numbers) as the last line: one JSON object, for `| tail -1 | jq`.

    With `own_task_runner` the flow runs on the task runner its params name (`task_runner`,
    `workers`, `dask_address`); the pipeline passes False because it starts one runner that
    both of its subflows share.
    """
    description = (getattr(flow_fn, "description", None) or flow_fn.__doc__ or "").strip()
    params = parse_params(params_model, description, argv)
    if own_task_runner and hasattr(flow_fn, "with_options"):
        runner = make_task_runner(params.task_runner, params.workers, params.dask_address)
        flow_fn = flow_fn.with_options(task_runner=runner)
    # Without a configured server each process starts a temporary one; on a busy 2-core
    # machine that takes longer than Prefect's default 20 s wait.
    timeout = max(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value(), 120)
    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: timeout}):
        result = flow_fn(params)
    print(json.dumps(_jsonable(result), default=str))
    return result


def _jsonable(result: Any) -> Any:
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return result
