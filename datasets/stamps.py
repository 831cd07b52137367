"""Stage stamps: reuse a stage's outputs when nothing they depend on changed, else rebuild.

Every cached stage keys its work on what it depends on (file hashes, parameters, code version)
and, once its outputs are complete, writes `_stamp.json` (the key and a small summary) last in
its output directory. A later run computing the same key, whose outputs still exist, takes the
recorded summary instead of doing the work again; any other key means rebuild. The same rule
serves a data stage (`audio/`, `symbolic/`), a training run directory and a whole flow, whose
key also covers its corpus's content and the project's source code (`flow_key`) and whose
stamp lives under `data_dir/cache/pipeline/<flow>/`: even a run in which every stage would
reuse still pays Prefect's bookkeeping for every task (seconds), which this skips.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets.io import sha256_file, sha256_json, write_json_atomic

if TYPE_CHECKING:
    from pydantic import BaseModel

STAMP_FILE = "_stamp.json"
# How the work is spread does not change what a flow produces.
RUNNER_FIELDS = {"task_runner", "workers", "dask_address"}


def _read(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    path = Path(directory) / STAMP_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def read_stamp(directory: str | os.PathLike[str]) -> str | None:
    """The cache key a stage recorded when it last completed in `directory`, if any."""
    stamp = _read(directory)
    return None if stamp is None else stamp.get("key")


def write_stamp(
    directory: str | os.PathLike[str], key: str, info: dict[str, Any] | None = None
) -> Path:
    """Mark a stage complete; written last, so a stage killed midway is never taken as done."""
    return write_json_atomic(Path(directory) / STAMP_FILE, {"key": key, "info": info or {}})


def reuse_stamp(
    directory: str | os.PathLike[str],
    key: str,
    outputs: Iterable[str | os.PathLike[str]] = (),
    clear_stale: bool = False,
) -> dict[str, Any] | None:
    """The summary recorded with `key` in `directory` when every path in `outputs` still
    exists; None when the stage has to run.

    `clear_stale`: a directory stamped with another key is removed whole first, so what was
    built from other inputs (a run trained on other tokens) cannot be resumed into the new
    one. A directory without a stamp is left alone: it is a stage killed midway, which may
    resume from what it wrote.
    """
    stamp = _read(directory)
    if stamp is None:
        return None
    if stamp.get("key") != key:
        if clear_stale:
            shutil.rmtree(directory)
        return None
    if not all(Path(path).exists() for path in outputs):
        return None
    return dict(stamp["info"])


def corpus_fingerprint(corpus: str) -> dict[str, Any]:
    """sha256 of the corpus file, or of every file under the corpus directory; a built-in
    corpus (`bach`, `bytebeat`) is defined by its name, the code and music21's version."""
    path = Path(corpus)
    if path.is_file():
        return {"file": sha256_file(path)}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {p.relative_to(path).as_posix(): sha256_file(p) for p in files}
    return {"builtin": corpus, "music21": version("music21")}


def flow_key(params: BaseModel, code_version: str) -> str:
    """The key of a whole flow run: its parameters (not how the work is spread), the content
    of its corpus and the project's code version."""
    fields = params.model_dump(mode="json", exclude=RUNNER_FIELDS)
    corpus = fields.get("corpus")
    fingerprint = corpus_fingerprint(corpus) if isinstance(corpus, str) else None
    return sha256_json({"params": fields, "corpus": fingerprint, "code": code_version})


def stamp_dir(data_dir: str | os.PathLike[str], flow_name: str) -> Path:
    """Where a flow's whole-run stamp lives."""
    return Path(data_dir) / "cache" / "pipeline" / flow_name


def _strings(value: Any) -> Iterator[str]:
    """Every string leaf of a nested result (dicts and lists)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def output_paths(result: dict[str, Any]) -> list[str]:
    """The files and directories a flow's result names (string leaves that exist)."""
    return sorted({v for v in _strings(result) if "/" in v and Path(v).exists()})


def reusable_result(directory: Path, key: str) -> dict[str, Any] | None:
    """The recorded result when the stamp has `key` and every recorded output still exists."""
    info = reuse_stamp(directory, key)
    if info is None or not all(Path(p).exists() for p in info["outputs"]):
        return None
    return info["result"]


def record_result(directory: Path, key: str, result: dict[str, Any]) -> None:
    write_stamp(directory, key, {"result": result, "outputs": output_paths(result)})
