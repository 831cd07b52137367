"""Tasks of the symbolic data stage: discover, parse and tokenize (over batches), split, write.

Each task calls one pure function from `datasets/` and passes on small records (paths, counts);
note tables and tokens stay on disk in the content-addressed cache.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from datasets.inventory import corpus_inventory
from datasets.splits import choose_splits
from datasets.symbolic.corpus import corpus_files
from datasets.symbolic.dataset import write_dataset
from datasets.symbolic.parse import parse_entry
from datasets.symbolic.tokenizer import Vocab
from datasets.symbolic.tokens import tokenize_record
from tasks.common import log_rejected, publish_table

# Our own content-addressed cache decides what to recompute; Prefect's would hash big inputs.


@task(name="symbolic-discover", cache_policy=NO_CACHE)
def discover_task(
    corpus: str, data_dir: str, limit: int | None, max_file_bytes: int
) -> list[dict[str, Any]]:
    """Find the corpus files (exporting the bundled chorales first for `bach`) and hash them."""
    root, paths = corpus_files(corpus, data_dir, limit)
    entries = corpus_inventory(corpus, paths, root, max_file_bytes, limit)
    get_run_logger().info("corpus %s: %d files under %s", corpus, len(entries), root)
    return entries


@task(name="symbolic-parse", cache_policy=NO_CACHE)
def parse_task(
    entries: list[dict[str, Any]], cache_dir: str, max_notes: int | None
) -> list[dict[str, Any]]:
    """Parse a batch of files into cached note tables."""
    records = [parse_entry(entry, cache_dir, max_notes) for entry in entries]
    log_rejected(records)
    return records


@task(name="symbolic-split", cache_policy=NO_CACHE)
def split_task(
    records: list[dict[str, Any]],
    seed: int,
    valid_fraction: float,
    test_fraction: float,
    limit: int | None,
) -> dict[str, str]:
    """Assign each piece to train/valid/test, before augmentation."""
    return choose_splits(records, seed, valid_fraction, test_fraction, limit)


@task(name="symbolic-tokenize", cache_policy=NO_CACHE)
def tokenize_task(
    records: list[dict[str, Any]], vocab_json: str, cache_dir: str
) -> list[dict[str, Any]]:
    """Quantize, tokenize and transpose to 12 keys a batch of parsed files."""
    vocab = Vocab.from_json(vocab_json)
    return [tokenize_record(r, vocab, cache_dir) for r in records if r["notes_cache"]]


@task(name="symbolic-write", cache_policy=NO_CACHE)
def write_task(
    records: list[dict[str, Any]],
    splits: dict[str, str],
    token_records: list[dict[str, Any]],
    vocab_json: str,
    out_dir: str,
) -> dict[str, Any]:
    """Write the manifest, notes, tokens and vocabulary; publish the rejected files."""
    summary = write_dataset(records, splits, token_records, Vocab.from_json(vocab_json), out_dir)
    rejected = [
        {"path": r["path"], "status": r["status"], "reason": r["reason"]}
        for r in records
        if r["status"] != "ok"
    ]
    if rejected:
        publish_table(
            "symbolic-rejected",
            rejected,
            description=f"{len(rejected)} corpus files not used (rejected or duplicate)",
        )
    get_run_logger().info("symbolic dataset in %s: %s", out_dir, summary)
    return summary
