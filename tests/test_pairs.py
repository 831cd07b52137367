"""Pair making: degradation, aligned patches, silence, splits by file, streamed shards."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from audio_files import chirp, write_bad_files, write_good_files

from datasets.audio.dataset import write_audio_dataset
from datasets.audio.load import load_entry
from datasets.audio.lowres import pairs_entry
from datasets.audio.pairs import (
    PairSpec,
    degrade,
    file_filter,
    loud_offsets,
    make_pairs,
    patch_offsets,
)
from datasets.audio.shards import write_pair_shards
from datasets.audio.signals import FILTERS, decimate, quantize_uniform
from datasets.inventory import inventory
from datasets.splits import split_pieces


def column(table, name: str) -> np.ndarray:
    return np.stack([np.asarray(row, dtype=np.float32) for row in table.column(name).to_pylist()])


@pytest.mark.parametrize("filt", FILTERS)
@pytest.mark.parametrize("bits", [None, 6])
def test_degrade_is_decimation_then_the_quantizer(filt: str, bits: int | None) -> None:
    hr = chirp(0.3, 16000)[:, 0]
    lr = degrade(hr, 4, filt, bits)
    assert len(lr) == math.ceil(len(hr) / 4)
    expected = decimate(hr, 4, filt)
    np.testing.assert_array_equal(lr, expected if bits is None else quantize_uniform(expected, 6))


def test_patches_are_aligned_slices_of_the_whole_file() -> None:
    spec = PairSpec(ratio=4, patch=1024, stride=512, silence_rms=0.0)
    hr = chirp(0.5, 16000)[:, 0]
    table, n_silent = make_pairs("f", hr, spec)
    offsets = patch_offsets(len(hr), 1024, 512)
    assert table.column("offset").to_pylist() == offsets.tolist()
    assert n_silent == 0
    lr = degrade(hr, 4, "soxr")
    hr_rows, lr_rows = column(table, "hr"), column(table, "lr")
    for row, offset in enumerate(offsets):
        np.testing.assert_array_equal(hr_rows[row], hr[offset : offset + 1024])
        np.testing.assert_array_equal(lr_rows[row], lr[offset // 4 : offset // 4 + 256])
    assert set(table.column("filter").to_pylist()) == {"soxr"}


def test_silent_patches_are_dropped_and_counted() -> None:
    spec = PairSpec(ratio=2, patch=512, stride=512, silence_rms=0.01)
    hr = chirp(0.25, 16000)[:, 0]
    hr[1024:2560] = 0.0  # three whole patches of silence
    hr[2560:3072] *= 1e-4  # and one very quiet one
    table, n_silent = make_pairs("f", hr, spec)
    assert n_silent == 4
    assert table.num_rows == len(patch_offsets(len(hr), 512, 512)) - 4
    assert not {1024, 1536, 2048, 2560} & set(table.column("offset").to_pylist())


@pytest.mark.parametrize(("patch", "stride"), [(512, 512), (1024, 256), (768, 512)])
def test_loud_offsets_match_the_rms_of_every_patch(patch: int, stride: int) -> None:
    spec = PairSpec(ratio=4, patch=patch, stride=stride, silence_rms=0.05)
    hr = chirp(0.3, 16000)[:, 0]
    hr[1000:3000] *= 1e-3
    offsets = patch_offsets(len(hr), patch, stride)
    rms = np.array(
        [np.sqrt(np.mean(np.square(hr[o : o + patch], dtype=np.float64))) for o in offsets]
    )
    loud, n_silent = loud_offsets(hr, spec)
    np.testing.assert_array_equal(loud, offsets[rms >= 0.05])
    assert n_silent == int((rms < 0.05).sum()) > 0


def test_random_filter_is_per_file_deterministic_and_recorded() -> None:
    spec = PairSpec(filter="random", patch=512, stride=512, seed=3)
    chosen = {file_filter(spec, f"file{i}") for i in range(40)}
    assert chosen == set(FILTERS)
    assert file_filter(spec, "file7") == file_filter(PairSpec(filter="random", seed=3), "file7")
    table, _ = make_pairs("file7", chirp(0.2, 16000)[:, 0], spec)
    assert set(table.column("filter").to_pylist()) == {file_filter(spec, "file7")}


def test_spec_refuses_bad_parameters() -> None:
    for bad, reason in (
        ({"ratio": 5}, "ratio must be one of"),
        ({"filter": "butter"}, "filter must be one of"),
        ({"patch": 1000, "ratio": 3}, "patch 1000 must be a positive multiple of ratio 3"),
        ({"stride": 6, "ratio": 4}, "stride 6 must be a positive multiple of ratio 4"),
        ({"bits": 0}, "bits must be in"),
    ):
        with pytest.raises(ValueError, match=reason):
            PairSpec(**bad)


def build(corpus: Path, data_dir: Path, spec: PairSpec, rows_per_file: int = 7) -> dict:
    entries = inventory(sorted(p for p in corpus.rglob("*") if p.is_file()), corpus, 10**9)
    records = [load_entry(e, data_dir, spec.hr_rate, spec.patch) for e in entries]
    splits = split_pieces([r["file_id"] for r in records if r["status"] == "ok"], 0, 0.2, 0.2)
    records = [pairs_entry(r, data_dir, spec) for r in records]
    summary = write_audio_dataset(records, splits, data_dir, spec, rows_per_file)
    by_split = {s: {f for f, v in splits.items() if v == s} for s in ("train", "valid", "test")}
    return summary | {"records": records, "splits": by_split}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_good_files(root / "good", seconds=0.6)
    write_bad_files(root / "bad")
    (root / "good" / "copy.wav").write_bytes((root / "good" / "a_pcm16.wav").read_bytes())
    return root


def test_dataset_on_disk_follows_the_contract(corpus: Path, tmp_path: Path) -> None:
    spec = PairSpec(ratio=4, patch=2048, stride=1024, filter="random", bits=8)
    summary = build(corpus, tmp_path, spec)
    manifest = pq.read_table(tmp_path / "audio" / "manifest.parquet").to_pylist()
    found = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file())
    assert [row["path"] for row in manifest] == found  # every file found is in the manifest
    status = {row["path"]: row for row in manifest}
    for name, reason in write_bad_files(tmp_path / "expected").items():
        row = status[f"bad/{name}"]
        assert (row["status"] == "ok") == (reason == ""), (name, row)
        assert reason in row["reason"]
    assert status["good/copy.wav"]["status"] == "duplicate"
    assert status["good/f_8ch.wav"]["status"] == status["good/g_192k.wav"]["status"] == "ok"

    files = pq.read_table(tmp_path / "audio" / "files.parquet").to_pylist()
    accepted_bad = sum(reason == "" for reason in write_bad_files(tmp_path / "again").values())
    assert len(files) == summary["n_ok"] == 7 + accepted_bad
    assert {f["split"] for f in files} == {"train", "valid", "test"}
    for f in files:
        assert (tmp_path / f["hr_path"]).exists()
        if f["path"].startswith("good/"):
            assert f["n_samples"] == pytest.approx(0.6 * 16000, abs=2)

    pairs_dir = tmp_path / "audio" / "pairs"
    split_of = {f["file_id"]: f["split"] for f in files}
    total = 0
    for shard in sorted(pairs_dir.glob("*.parquet")):
        table = pq.read_table(shard)
        assert table.num_rows <= 7
        assert table.column_names == ["file_id", "split", "offset", "filter", "hr", "lr"]
        meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
        assert meta | {"stride": "", "silence_rms": ""} == {
            "hr_rate": "16000",
            "ratio": "4",
            "filter": "random",
            "bits": "8",
            "patch": "2048",
            "stride": "",
            "silence_rms": "",
        }
        split = shard.name.split("-")[0]
        for file_id, row_split in zip(
            table.column("file_id").to_pylist(), table.column("split").to_pylist(), strict=True
        ):
            assert row_split == split == split_of[file_id]  # a file never spans two splits
        lr = column(table, "lr")
        assert lr.shape[1] == 512
        np.testing.assert_array_equal(lr, quantize_uniform(lr, 8))  # 8-bit levels only
        total += table.num_rows
    assert total == sum(summary[f"pairs_{s}"] for s in ("train", "valid", "test")) > 0


def test_same_inputs_same_bytes_and_reuse(corpus: Path, tmp_path: Path) -> None:
    spec = PairSpec(ratio=2, patch=1024, stride=1024, filter="random", seed=1)
    build(corpus, tmp_path / "one", spec)
    second = build(corpus, tmp_path / "two", spec)
    assert not any(r["reused"] for r in second["records"])
    names = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "audio").rglob("*"))
    assert any(n.suffix == ".parquet" and "pairs" in n.parts for n in names)
    for name in names:
        if (tmp_path / "one" / name).is_file():
            a, b = (tmp_path / "one" / name).read_bytes(), (tmp_path / "two" / name).read_bytes()
            assert a == b, name
    third = build(corpus, tmp_path / "one", spec)
    ok = [r for r in third["records"] if r["status"] == "ok"]
    assert all(r["reused"] and r["pairs_reused"] for r in ok)


def test_fewer_rows_later_removes_stale_shards(corpus: Path, tmp_path: Path) -> None:
    spec = PairSpec(ratio=4, patch=1024, stride=256)
    build(corpus, tmp_path, spec, rows_per_file=3)
    many = len(list((tmp_path / "audio" / "pairs").glob("*.parquet")))
    build(corpus, tmp_path, spec, rows_per_file=1000)
    assert many > 3 == len(list((tmp_path / "audio" / "pairs").glob("*.parquet")))


def test_cached_hr_is_redone_when_another_rate_overwrote_it(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_good_files(root, seconds=0.3)
    entry = inventory([root / "a_pcm16.wav"], root, 10**9)[0]
    first = load_entry(entry, tmp_path / "d", 16000)
    load_entry(entry, tmp_path / "d", 8000)
    again = load_entry(entry, tmp_path / "d", 16000)
    assert not again["reused"]
    assert again["n_samples"] == first["n_samples"]


def test_shards_hold_slices_of_the_files_and_do_not_depend_on_threads(
    corpus: Path, tmp_path: Path
) -> None:
    spec = PairSpec(ratio=4, patch=1024, stride=512, filter="random", seed=2)
    summary = build(corpus, tmp_path, spec, rows_per_file=5)
    ok = [r for r in summary["records"] if r["status"] == "ok"]
    shards = sorted((tmp_path / "audio" / "pairs").glob("*.parquet"))
    reference = {shard.name: shard.read_bytes() for shard in shards}
    for writers in (1, 3):
        for split in ("train", "valid", "test"):
            members = [r for r in ok if r["file_id"] in summary["splits"][split]]
            write_pair_shards(members, split, tmp_path, spec, rows_per_file=5, writers=writers)
        assert {s.name: s.read_bytes() for s in shards} == reference
    by_id = {r["file_id"]: r for r in ok}
    rows = 0
    for shard in shards:
        table = pq.read_table(shard)
        assert table.schema.field("hr").type == pa.list_(pa.field("element", pa.float32()))
        assert table.schema.field("lr").type == table.schema.field("hr").type
        assert table.schema.field("hr").type.value_type == pa.float32()
        meta = pq.ParquetFile(shard).metadata.row_group(0)
        for index in (4, 5):  # hr, lr: plain floats, zstd, no dictionary, no statistics
            chunk = meta.column(index)
            assert "PLAIN" in chunk.encodings
            assert not any("DICT" in e for e in chunk.encodings)
            assert chunk.compression == "ZSTD"
            assert not chunk.is_stats_set
        hr_rows, lr_rows = column(table, "hr"), column(table, "lr")
        for k, (file_id, offset) in enumerate(
            zip(
                table.column("file_id").to_pylist(), table.column("offset").to_pylist(), strict=True
            )
        ):
            record = by_id[file_id]
            hr, _ = sf.read(str(tmp_path / record["hr_path"]), dtype="float32")
            lr = degrade(hr, 4, record["filter"])
            np.testing.assert_array_equal(hr_rows[k], hr[offset : offset + 1024])
            np.testing.assert_array_equal(lr_rows[k], lr[offset // 4 : offset // 4 + 256])
        rows += table.num_rows
    assert rows == sum(r["n_patches"] for r in ok) > 5


def test_stage_syncs_once_instead_of_per_file(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets.audio.dataset

    fsyncs: list[int] = []
    syncs: list[Path] = []
    monkeypatch.setattr("os.fsync", lambda fd: fsyncs.append(fd))
    real_sync = datasets.audio.dataset.sync_filesystem
    monkeypatch.setattr(
        datasets.audio.dataset,
        "sync_filesystem",
        lambda path: (syncs.append(Path(path)), real_sync(path)),
    )
    build(corpus, tmp_path, PairSpec(ratio=4, patch=1024, stride=512))
    assert fsyncs == []
    assert syncs == [tmp_path]
    assert not list(tmp_path.rglob("*.tmp"))


def test_damaged_caches_are_redone(corpus: Path, tmp_path: Path) -> None:
    """What a power cut before the stage's sync may leave: empty or short cache files."""
    spec = PairSpec(ratio=4, patch=1024, stride=512)
    first = build(corpus, tmp_path / "one", spec)
    ok = sorted((r for r in first["records"] if r["status"] == "ok"), key=lambda r: r["file_id"])
    data = tmp_path / "one"
    lr_cache = data / ok[0]["lr_path"]
    lr_cache.write_bytes(lr_cache.read_bytes()[: lr_cache.stat().st_size // 2])
    stamps = sorted((data / "cache" / "audio" / "load").glob("*.json"))
    stamps[0].write_bytes(b"")
    wav = data / ok[1]["hr_path"]
    wav.write_bytes(wav.read_bytes()[: wav.stat().st_size // 2])
    again = build(corpus, data, spec)
    by_id = {r["file_id"]: r for r in again["records"] if r["status"] == "ok"}
    assert not by_id[ok[0]["file_id"]]["pairs_reused"]
    assert not by_id[ok[1]["file_id"]]["reused"]
    assert sum(not r["reused"] for r in again["records"] if r["load_key"]) >= 2
    build(corpus, tmp_path / "two", spec)
    for shard in sorted((tmp_path / "two" / "audio" / "pairs").glob("*.parquet")):
        assert (data / "audio" / "pairs" / shard.name).read_bytes() == shard.read_bytes()
