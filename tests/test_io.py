"""Atomic writes, deterministic Parquet, manifests and stage stamps."""

from __future__ import annotations

import os
import stat
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datasets import io, stamps
from datasets.io import load_npz


def test_atomic_path_leaves_target_untouched_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def write_half_then_fail() -> None:
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError, match="killed midway"):
        write_half_then_fail()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_write_parquet_atomic_is_byte_identical(tmp_path):
    table = pa.table({"a": [3, 1, 2], "b": ["x", "y", "z"]})
    first = io.write_parquet_atomic(tmp_path / "one.parquet", table).read_bytes()
    second = io.write_parquet_atomic(tmp_path / "two.parquet", table).read_bytes()
    assert first == second
    assert pq.read_table(tmp_path / "one.parquet").equals(table)


def test_write_json_atomic_sorts_keys_and_refuses_nan(tmp_path):
    path = io.write_json_atomic(tmp_path / "m.json", {"b": 1, "a": 2})
    assert path.read_text().index('"a"') < path.read_text().index('"b"')
    with pytest.raises(ValueError, match="not JSON compliant"):
        io.write_json_atomic(tmp_path / "bad.json", {"x": float("nan")})
    assert not (tmp_path / "bad.json").exists()


def test_manifest_is_sorted_and_validated(tmp_path):
    rows = [
        io.manifest_row("b.mid", "2" * 64, 10, "ok"),
        io.manifest_row("a.mid", "1" * 64, 0, "rejected", "empty file"),
    ]
    table = pq.read_table(io.write_manifest(tmp_path / "manifest.parquet", rows))
    assert table.column("path").to_pylist() == ["a.mid", "b.mid"]
    assert table.schema.equals(io.MANIFEST_SCHEMA)
    with pytest.raises(ValueError, match="unknown manifest status"):
        io.manifest_row("c.mid", "", 0, "maybe")


def test_sha256_and_stable_json_hash(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert io.sha256_file(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert io.sha256_json({"a": 1, "b": [1, 2]}) == io.sha256_json({"b": [1, 2], "a": 1})


def test_relative_to_root_refuses_escape(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    assert io.relative_to_root(root / "x" / "y.mid", root) == "x/y.mid"
    with pytest.raises(ValueError, match="outside"):
        io.relative_to_root(root / ".." / "etc" / "passwd", root)


def test_stamps_round_trip(tmp_path):
    assert stamps.read_stamp(tmp_path) is None
    stamps.write_stamp(tmp_path, "key-1", {"files": 3})
    assert stamps.read_stamp(tmp_path) == "key-1"


def test_a_stamp_is_reused_only_with_its_key_and_outputs(tmp_path):
    output = tmp_path / "out.parquet"
    output.write_bytes(b"x")
    stamps.write_stamp(tmp_path, "key-1", {"files": 3})
    assert stamps.reuse_stamp(tmp_path, "key-1", [output]) == {"files": 3}
    assert stamps.reuse_stamp(tmp_path, "key-2", [output]) is None
    assert stamps.reuse_stamp(tmp_path, "key-1", [tmp_path / "missing"]) is None
    assert tmp_path.exists()  # a stale stamp alone removes nothing


def test_clear_stale_removes_a_directory_built_from_other_inputs_only(tmp_path):
    killed, stale = tmp_path / "killed", tmp_path / "stale"
    killed.mkdir()
    (killed / "checkpoint").write_bytes(b"x")
    stamps.write_stamp(stale, "old-key")
    assert stamps.reuse_stamp(killed, "key", clear_stale=True) is None
    assert stamps.reuse_stamp(stale, "key", clear_stale=True) is None
    assert (killed / "checkpoint").exists()
    assert not stale.exists()


def test_code_version_changes_with_source(tmp_path, monkeypatch):
    module_file = tmp_path / "mod.py"
    module_file.write_text("x = 1\n")

    class FakeModule:
        __file__ = str(module_file)

    before = io.code_version(FakeModule)
    module_file.write_text("x = 2\n")
    assert io.code_version(FakeModule) != before


def test_printable_name_escapes_and_rejects_undecodable_names():
    assert io.printable_name("a/b.mid") == ("a/b.mid", "")
    raw = os.fsdecode(b"caf\xe9.mid")  # Latin-1 bytes: not UTF-8
    name, reason = io.printable_name(raw)
    assert name == "caf\\xe9.mid"
    assert "not valid UTF-8" in reason
    name.encode("utf-8")  # writable to Parquet


def test_regular_file_size_names_links_loops_and_fifos(tmp_path):
    good = tmp_path / "good.mid"
    good.write_bytes(b"MThd")
    assert io.regular_file_size(good) == (4, "")
    (tmp_path / "dangling.mid").symlink_to(tmp_path / "missing.mid")
    (tmp_path / "loop.mid").symlink_to(tmp_path / "loop.mid")
    os.mkfifo(tmp_path / "pipe.mid")
    assert "No such file" in io.regular_file_size(tmp_path / "dangling.mid")[1]
    assert "symbolic links" in io.regular_file_size(tmp_path / "loop.mid")[1]
    assert "not a regular file" in io.regular_file_size(tmp_path / "pipe.mid")[1]


def test_atomic_path_without_fsync_and_one_sync(tmp_path, monkeypatch):
    fsyncs = []
    monkeypatch.setattr(os, "fsync", lambda fd: fsyncs.append(fd))
    io.write_bytes_atomic(tmp_path / "a.bin", b"abc", durable=False)
    assert fsyncs == []
    assert (tmp_path / "a.bin").read_bytes() == b"abc"
    io.write_bytes_atomic(tmp_path / "b.bin", b"abc")
    assert len(fsyncs) == 1
    monkeypatch.undo()
    io.sync_filesystem(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_atomic_writes_get_the_mode_a_plain_write_gets(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = io.write_bytes_atomic(tmp_path / "atomic.txt", b"x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_load_npz_reads_every_array_whole_from_many_threads(tmp_path):
    path = tmp_path / "cache.npz"
    np.savez(path, lr=np.arange(8, dtype=np.float32), offsets=np.arange(3), n_silent=np.array(2))
    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(lambda _: load_npz(path), range(64)))
    for arrays in loaded:
        assert sorted(arrays) == ["lr", "n_silent", "offsets"]
        np.testing.assert_array_equal(arrays["lr"], np.arange(8, dtype=np.float32))
        assert int(arrays["n_silent"]) == 2
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises((OSError, ValueError, EOFError, zipfile.BadZipFile)):
        load_npz(truncated)
