"""Tasks of the audio data stage: discover, load (over batches), split, pairs (over batches), write.

Each task calls pure functions from `datasets/` and passes on small records (paths, counts);
audio and pairs stay on disk in the content-addressed cache under `data_dir/cache/audio`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from datasets.audio.corpus import audio_inventory, file_group
from datasets.audio.dataset import dataset_key, write_audio_dataset
from datasets.audio.load import load_entry
from datasets.audio.lowres import pairs_entry
from datasets.audio.pairs import PairSpec
from datasets.audio.signal_report import report_excerpt, signal_report
from datasets.splits import split_groups, split_pieces
from datasets.stamps import reuse_stamp, write_stamp
from tasks.common import log_rejected, publish_markdown, publish_table

# Our own content-addressed cache decides what to recompute; Prefect's would hash big inputs.


@task(name="audio-discover", cache_policy=NO_CACHE)
def discover_task(
    corpus: str,
    data_dir: str,
    hr_rate: int,
    limit: int | None,
    program: int,
    max_file_bytes: int,
) -> list[dict[str, Any]]:
    """Find (rendering first for bach and bytebeat) and hash the corpus files, of every part of
    a mix; one entry each."""
    entries = audio_inventory(corpus, data_dir, hr_rate, limit, program, max_file_bytes)
    found = sum(bool(entry["file"]) for entry in entries)
    get_run_logger().info("audio corpus %s: %d files", corpus, found)
    return entries


@task(name="audio-load", cache_policy=NO_CACHE)
def load_task(
    entries: list[dict[str, Any]],
    data_dir: str,
    hr_rate: int,
    min_samples: int,
    max_file_bytes: int | None,
    max_seconds: float | None,
) -> list[dict[str, Any]]:
    """Decode, mix to mono and resample a batch of files to `audio/hr/<file_id>.wav`."""
    records = [
        load_entry(entry, data_dir, hr_rate, min_samples, max_file_bytes, max_seconds)
        for entry in entries
    ]
    log_rejected(records)
    return records


@task(name="audio-split", cache_policy=NO_CACHE)
def split_task(
    records: list[dict[str, Any]],
    seed: int,
    valid_fraction: float,
    test_fraction: float,
    by_dir: bool = False,
    mixed: bool = False,
) -> dict[str, str]:
    """Assign each accepted file to train/valid/test, before any patching; `by_dir` keeps the
    files of each top directory under the corpus root (a speaker, a song), or under its part's
    root in a `mixed` corpus, in one split."""
    ok = [r for r in records if r["status"] == "ok"]
    if not by_dir:
        return split_pieces([r["file_id"] for r in ok], seed, valid_fraction, test_fraction)
    groups = {r["file_id"]: file_group(r["path"], mixed) for r in ok}
    return split_groups(groups, seed, valid_fraction, test_fraction)


@task(name="audio-pairs", cache_policy=NO_CACHE)
def pairs_task(
    records: list[dict[str, Any]], data_dir: str, spec: dict[str, Any]
) -> list[dict[str, Any]]:
    """Degrade and cut a batch of loaded files into cached (hr, lr) patches."""
    pair_spec = PairSpec(**spec)
    return [pairs_entry(record, data_dir, pair_spec) for record in records]


@task(name="audio-write", cache_policy=NO_CACHE)
def write_task(
    records: list[dict[str, Any]], splits: dict[str, str], data_dir: str, spec: dict[str, Any]
) -> dict[str, Any]:
    """Write manifest, files table and pair shards (unless the stamp says they are current);
    publish the rejected files as a table artifact."""
    pair_spec = PairSpec(**spec)
    audio_dir = Path(data_dir) / "audio"
    key = dataset_key(records, splits, pair_spec)
    logger = get_run_logger()
    summary = reuse_stamp(audio_dir, key, [audio_dir / "manifest.parquet"])
    if summary is not None:
        logger.info("audio dataset in %s is current; nothing written", audio_dir)
        summary["reused"] = True
    else:
        summary = write_audio_dataset(records, splits, data_dir, pair_spec)
        write_stamp(audio_dir, key, summary)
        summary["reused"] = False
    rejected = [
        {"path": r["path"], "status": r["status"], "reason": r["reason"]}
        for r in sorted(records, key=lambda r: r["path"])
        if r["status"] != "ok"
    ]
    if rejected:
        publish_table(
            "audio-rejected",
            rejected,
            description=f"{len(rejected)} audio files not used (rejected or duplicate)",
        )
    logger.info("audio dataset in %s: %s", audio_dir, summary)
    return summary


@task(name="audio-signal-report", cache_policy=NO_CACHE)
def signal_report_task(data_dir: str, hr_rate: int, excerpt: int = 4096) -> str:
    """Draw `reports/audio_signals.png` from the middle of the first accepted file (by id),
    or from a demo tone when there is none; publish its numbers as a markdown artifact."""
    signal, title = report_excerpt(data_dir, excerpt)
    out = Path(data_dir) / "reports" / "audio_signals.png"
    numbers = signal_report(out, signal, hr_rate, title=f"{title} @ {hr_rate} Hz")
    lines = ["| bits | SQNR dB | 6.02N+1.76 |", "| --- | --- | --- |"]
    lines += [
        f"| {q['bits']} | {q['sqnr_db']:.1f} | {q['theory_db']:.1f} |"
        for q in numbers["quantization"]
    ]
    lines += ["", "| rate Hz | SNR sinc, no filter | SNR sinc, soxr |", "| --- | --- | --- |"]
    lines += [
        f"| {s['lr_rate']:.0f} | {s['snr_none_db']:.1f} | {s['snr_soxr_db']:.1f} |"
        for s in numbers["sampling"]
    ]
    publish_markdown(
        "audio-signals", "\n".join(lines), description=f"{title}: quantization and sampling ({out})"
    )
    return str(out)
