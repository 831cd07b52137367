"""The inventory of a corpus, for both domains: one entry per file found, hashed, with its status
(ok, rejected with the reason, or duplicate of an earlier file), before anything is parsed; and
how its entries are cut into batches of work for the per-file tasks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from datasets.io import printable_name, regular_file_size, relative_to_root, sha256_file

STATUSES = ("ok", "rejected", "duplicate")


def hash_threads(n_files: int) -> int:
    """Threads that hash an inventory: one per core, at most 4 (hashing is memory-bound)."""
    return max(1, min(4, os.cpu_count() or 1, n_files))


def _try_sha256(entry: dict[str, Any]) -> tuple[str, str]:
    """The file's sha256, or "" and why it could not be read."""
    try:
        return sha256_file(entry["file"]), ""
    except OSError as exc:
        return "", str(exc.strerror or exc)


def inventory(
    paths: Sequence[str | os.PathLike[str]], root: str | os.PathLike[str], max_file_bytes: int
) -> list[dict[str, Any]]:
    """One entry per file, sorted by manifest path: status ok (to parse), rejected or duplicate.

    Duplicates are files whose bytes equal an earlier file's (in path order); they are
    processed once, under the first name.
    """
    entries = []
    for path in paths:
        rel, reason = printable_name(relative_to_root(path, root))
        size, unreadable = (0, "") if reason else regular_file_size(path)
        entries.append(
            {
                "path": rel,
                "file": os.path.abspath(path),
                "size_bytes": size,
                "sha256": "",
                "status": "rejected" if reason or unreadable else "ok",
                "reason": reason or unreadable,
            }
        )
    entries.sort(key=lambda entry: entry["path"])
    to_hash = []
    for entry in entries:
        if entry["status"] == "rejected":
            continue
        if entry["size_bytes"] == 0:
            entry["status"], entry["reason"] = "rejected", "empty file (0 bytes)"
        elif entry["size_bytes"] > max_file_bytes:
            entry["status"] = "rejected"
            entry["reason"] = (
                f"file is {entry['size_bytes']} bytes, over max_file_bytes={max_file_bytes}; "
                "raise the limit to include it"
            )
        else:
            to_hash.append(entry)
    # hashlib releases the GIL: the files are hashed on threads, the results kept in path order.
    with ThreadPoolExecutor(hash_threads(len(to_hash))) as pool:
        for entry, (digest, error) in zip(to_hash, pool.map(_try_sha256, to_hash), strict=True):
            entry["sha256"] = digest
            if error:
                entry["status"], entry["reason"] = "rejected", f"cannot read it: {error}"
    return mark_duplicates(entries)


def mark_duplicates(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark each ok entry whose sha256 an earlier ok entry had as a duplicate of it (in list
    order); the entries are changed in place and returned."""
    first_by_sha: dict[str, str] = {}
    for entry in entries:
        if entry["status"] != "ok":
            continue
        if entry["sha256"] in first_by_sha:
            entry["status"] = "duplicate"
            entry["reason"] = f"same content as {first_by_sha[entry['sha256']]}"
        else:
            first_by_sha[entry["sha256"]] = entry["path"]
    return entries


def reject_beyond_limit(entries: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """Keep the first `limit` readable files (in path order); the rest stay in the manifest,
    rejected with the reason, instead of vanishing from it."""
    if limit is None:
        return entries
    kept = 0
    for entry in entries:
        if entry["status"] != "ok":
            continue
        if kept < limit:
            kept += 1
        else:
            entry["status"] = "rejected"
            entry["reason"] = f"beyond --limit {limit} (raise --limit or use --profile full)"
    return entries


def corpus_inventory(
    corpus: str,
    paths: Sequence[str | os.PathLike[str]],
    root: str | os.PathLike[str],
    max_file_bytes: int,
    limit: int | None,
) -> list[dict[str, Any]]:
    """The inventory of the files found for `corpus`. A built-in corpus was already cut to
    `limit` when its files were found; a directory of the user's is read whole and cut here,
    so the files beyond the limit stay in the manifest (`reject_beyond_limit`)."""
    entries = inventory(paths, root, max_file_bytes)
    return reject_beyond_limit(entries, limit) if Path(corpus).is_dir() else entries


def batches(items: list[dict[str, Any]], size: int, workers: int = 1) -> list[list[dict[str, Any]]]:
    """Contiguous batches of at most `size` items, as many as a multiple of `workers` (where
    there are enough items) and within one item of each other in size: 24 files in batches of
    16 on 2 workers go 12 + 12, not 16 + 8, which left one worker idle a third of the stage."""
    if not items:
        return []
    count = -(-len(items) // size)
    count = min(len(items), -(-count // workers) * workers)
    base, extra = divmod(len(items), count)
    chunks, start = [], 0
    for k in range(count):
        stop = start + base + (k < extra)
        chunks.append(items[start:stop])
        start = stop
    return chunks
