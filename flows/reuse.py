"""Whole-flow reuse: skip a flow whose inputs, parameters and code are all unchanged.

Each flow's stages already re-use their own per-file caches, but even a run where every stage
re-uses still pays Prefect's bookkeeping for every task (seconds). The pipeline therefore keys
each flow run on (the content of its corpus, its parameters, the project's source code) and
records the key with the flow's result in a stamp under `data_dir/cache/pipeline/<flow>/`.
A later run with the same key, whose recorded outputs all still exist, returns the recorded
result without running the flow. Any change (a file added or edited, a parameter, a line of
code, an output deleted) runs the flow, whose stages then redo only what the change touches.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from datasets.io import STAMP_FILE, read_stamp, sha256_file, sha256_json, write_stamp
from models.report import flatten

PACKAGES = ("flows", "tasks", "datasets", "models")
# How the work is spread does not change what it produces.
RUNNER_FIELDS = {"task_runner", "workers", "dask_address"}


def project_code_version(root: Path = Path(__file__).resolve().parents[1]) -> str:
    """Hash of every .py file of the project's packages (path and bytes)."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            digest.update(source.relative_to(root).as_posix().encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


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
    fields = params.model_dump(mode="json", exclude=RUNNER_FIELDS)
    corpus = fields.get("corpus")
    fingerprint = corpus_fingerprint(corpus) if isinstance(corpus, str) else None
    return sha256_json({"params": fields, "corpus": fingerprint, "code": code_version})


def stamp_dir(data_dir: str, flow_name: str) -> Path:
    return Path(data_dir) / "cache" / "pipeline" / flow_name


def output_paths(result: dict[str, Any]) -> list[str]:
    """The files and directories a flow's result names (string leaves that exist)."""
    leaves = flatten(result).values()
    return sorted({v for v in leaves if isinstance(v, str) and "/" in v and Path(v).exists()})


def reusable_result(directory: Path, key: str) -> dict[str, Any] | None:
    """The recorded result when the stamp has `key` and every recorded output still exists."""
    if read_stamp(directory) != key:
        return None
    info = json.loads((directory / STAMP_FILE).read_text())["info"]
    if not all(Path(p).exists() for p in info["outputs"]):
        return None
    return info["result"]


def record_result(directory: Path, key: str, result: dict[str, Any]) -> None:
    write_stamp(directory, key, {"result": result, "outputs": output_paths(result)})
