"""Atomic file writes, content hashes and the manifest every stage keeps.

Every file a stage writes goes through these helpers: the bytes land in a temporary file beside
the target and are renamed over it (`os.replace` is atomic on POSIX), so a killed run never
leaves half a file where a reader would find it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"

MANIFEST_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("size_bytes", pa.int64()),
        ("status", pa.string()),  # "ok" | "rejected" | "duplicate"
        ("reason", pa.string()),
    ]
)


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it over `target`.

    On any exception the temporary file is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> Path:
    """Write JSON with sorted keys so the same object always gives the same bytes."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return write_bytes_atomic(target, (text + "\n").encode("utf-8"))


def write_parquet_atomic(target: str | os.PathLike[str], table: pa.Table) -> Path:
    """Write a Parquet file deterministically: same table -> same bytes.

    Statistics and the `created_by` string are fixed by pyarrow's version; nothing time- or
    host-dependent is written.
    """
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)
    return Path(target)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable hash of a JSON-able object (parameters, configs) for cache keys."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_row(
    path: str, sha256: str, size_bytes: int, status: str, reason: str = ""
) -> dict[str, Any]:
    if status not in {"ok", "rejected", "duplicate"}:
        raise ValueError(f"unknown manifest status {status!r}")
    return {
        "path": path,
        "sha256": sha256,
        "size_bytes": size_bytes,
        "status": status,
        "reason": reason,
    }


def write_manifest(target: str | os.PathLike[str], rows: list[dict[str, Any]]) -> Path:
    """Write a manifest sorted by path, so row order never depends on discovery order."""
    rows = sorted(rows, key=lambda row: row["path"])
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    return write_parquet_atomic(target, table)


def relative_to_root(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str:
    """The manifest path of `path`: relative to the corpus root, POSIX separators.

    Refuses paths that resolve outside the root, so a manifest can never point elsewhere.
    """
    resolved = Path(os.path.abspath(path))
    base = Path(os.path.abspath(root))
    try:
        return resolved.relative_to(base).as_posix()
    except ValueError as exc:
        raise ValueError(f"{path} lies outside the corpus root {root}") from exc


def code_version(*modules: Any) -> str:
    """Hash of the source files of `modules`: a change of code invalidates cached stages."""
    digest = hashlib.sha256()
    for module in modules:
        source = Path(module.__file__)
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


STAMP_FILE = "_stamp.json"


def read_stamp(directory: str | os.PathLike[str]) -> str | None:
    """The cache key a stage recorded when it last completed in `directory`, if any."""
    path = Path(directory) / STAMP_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("key")


def write_stamp(directory: str | os.PathLike[str], key: str, info: dict[str, Any] | None = None):
    """Mark a stage complete; written last, so a stage killed midway is never taken as done."""
    return write_json_atomic(Path(directory) / STAMP_FILE, {"key": key, "info": info or {}})


def printable_name(rel: str) -> tuple[str, str]:
    """`rel` as it can be written to a manifest, and a rejection reason when it is no UTF-8.

    A name of undecodable bytes (held by Python as surrogates) cannot go into Parquet as is:
    it is written with backslash escapes, and the file is rejected so a person renames it.
    """
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        escaped = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return escaped, "file name is not valid UTF-8; rename it"
    return rel, ""


def regular_file_size(path: str | os.PathLike[str]) -> tuple[int, str]:
    """The size of a regular file, or 0 and why it cannot be read as one (a dangling link,
    a symlink loop, a FIFO or device that a read would hang on, ...)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return 0, f"cannot open it: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return 0, "not a regular file (a FIFO, device or socket); only regular files are read"
    return info.st_size, ""
