"""Atomic file writes, content hashes, code versions and the manifest every stage keeps.

Every file a stage writes goes through these helpers: the bytes land in a temporary file beside
the target and are renamed over it (`os.replace` is atomic on POSIX), so a killed run never
leaves half a file where a reader would find it.

Atomicity (no half file under a final name after `kill -9`) comes from the rename alone.
Durability against a power cut is a separate matter: by default every file is fsynced before
its rename; a stage that writes many bulk files may instead write them with `durable=False` and
call `sync_filesystem` once before it commits (writes the stamp or manifest that makes those
files count), as the audio data stage does. See docs/bench/pairs.md for the reasoning.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import stat
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_COMPRESSION = "zstd"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "tasks", "datasets", "models")  # what `project_code_version` hashes

MANIFEST_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("sha256", pa.string()),
        ("size_bytes", pa.int64()),
        ("status", pa.string()),  # "ok" | "rejected" | "duplicate"
        ("reason", pa.string()),
    ]
)


def _umask() -> int:
    """The process's umask (read once, at import: setting it to read it is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# What a file `open(path, "w")` creates gets: mkstemp's files are 0600, which would leave every
# output unreadable to the group and to other users of a shared data directory.
FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_path(target: str | os.PathLike[str], durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it over `target`.

    On any exception the temporary file is removed and `target` is left as it was.
    `durable`: fsync the file before the rename. Without it the rename is just as atomic (no
    half file under `target`, whatever kills the process), but a power cut may lose the file
    or leave it short; callers that pass False call `sync_filesystem` before they commit.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _syncfs(fd: int) -> bool:
    """syncfs(2) where the C library has it (Linux); False where it does not."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    if syncfs(ctypes.c_int(fd)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs failed: {os.strerror(err)}")
    return True


def sync_filesystem(path: str | os.PathLike[str]) -> None:
    """Make everything written so far on the filesystem holding `path` durable, in one call.

    One syncfs(2) (Linux) flushes all the files a stage wrote without `durable` in one journal
    commit and one device cache flush, instead of one per file; elsewhere, `os.sync()`. The
    directory itself is fsynced too, so renames into it are durable where syncfs is missing.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        if not _syncfs(fd):
            os.sync()
            os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(target: str | os.PathLike[str], data: bytes, durable: bool = True) -> Path:
    with atomic_path(target, durable) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json_atomic(target: str | os.PathLike[str], obj: Any, durable: bool = True) -> Path:
    """Write JSON with sorted keys so the same object always gives the same bytes."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return write_bytes_atomic(target, (text + "\n").encode("utf-8"), durable)


def write_parquet_atomic(
    target: str | os.PathLike[str],
    table: pa.Table,
    durable: bool = True,
    row_group_size: int | None = None,
) -> Path:
    """Write a Parquet file deterministically: same table -> same bytes.

    Statistics and the `created_by` string are fixed by pyarrow's version; nothing time- or
    host-dependent is written. `row_group_size` rows per row group (default pyarrow's): a
    reader can then take the groups in any order.
    """
    with atomic_path(target, durable) as tmp:
        pq.write_table(table, tmp, compression=PARQUET_COMPRESSION, row_group_size=row_group_size)
    return Path(target)


# np.load parses each array's header with ast.literal_eval, and CPython 3.11's AST builder
# keeps a recursion counter that threads can upset (python/cpython#106905): a parse can fail with
# "SystemError: AST constructor recursion depth mismatch". Prefect runs a stage's tasks on
# threads, and a pairs stage died of it once (2026-12-03), so reads of npz files take turns.
_NPZ_LOCK = threading.Lock()


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an npz file, read whole, one thread at a time (`_NPZ_LOCK`); errors of a
    damaged file are np.load's (OSError, ValueError, EOFError, zipfile.BadZipFile)."""
    with _NPZ_LOCK, np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read unbuffered into one reused buffer (no copy per chunk, no
    new bytes object per read: 0.13 vs 0.17 CPU s for the 208 MB bench corpus). hashlib
    releases the GIL while it hashes, so files can be hashed on several threads."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
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


def write_manifest(
    target: str | os.PathLike[str], rows: list[dict[str, Any]], durable: bool = True
) -> Path:
    """Write a manifest sorted by path, so row order never depends on discovery order."""
    rows = sorted(rows, key=lambda row: row["path"])
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    return write_parquet_atomic(target, table, durable)


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


def hash_sources(sources: Iterable[Path], root: Path | None = None) -> str:
    """Hash of source files, each as its name (its path under `root`, or its file name) and
    its bytes: the one source hasher behind every code version, so a change of code
    invalidates what was cached with it."""
    digest = hashlib.sha256()
    for source in sources:
        name = source.relative_to(root).as_posix() if root is not None else source.name
        digest.update(name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def code_version(*modules: Any) -> str:
    """Hash of the source files of `modules`: the code version of one stage's cache."""
    return hash_sources(Path(module.__file__) for module in modules)


def project_code_version(root: Path = PROJECT_ROOT) -> str:
    """Hash of every .py file of the project's packages (path and bytes): the code version
    of a whole flow, which any line of the project may change."""
    return hash_sources(
        (source for package in PACKAGES for source in sorted((root / package).rglob("*.py"))),
        root,
    )


class RejectedInput(Exception):
    """An input file that cannot be used (not notes, not audio, unreadable); `reason` tells a
    person what to do about it, and the file lands in the manifest as rejected with it."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


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
