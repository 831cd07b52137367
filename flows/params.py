"""The parameter fields every flow shares, defined once.

Each flow takes one pydantic model (the Prefect UI renders it as a form, `flows.cli` as
options). `FlowParams` holds what every flow, the pipeline included, takes: where outputs go,
the profile, the seed and how tasks are spread. `CorpusParams` adds what the two domain flows
take about their corpus, with one rule for the quick subset: the tiny and quick profiles take
the first `QUICK_LIMIT` files (each domain's config module says how many) of a built-in
corpus, while a corpus of the user's is read whole unless `--limit` says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, Field, model_validator

from flows.runners import TaskRunnerName
from models.distributed import LaunchConfig

Profile = Literal["tiny", "quick", "full"]


class FlowParams(BaseModel):
    data_dir: str = Field("data", description="Directory all outputs and caches go under")
    profile: Profile = Field(
        "quick",
        description="tiny: the smallest models, seconds of training (tests, smoke runs); "
        "quick: small models, minutes on 2 CPU cores; tiny and quick take the first files "
        "(24) of a built-in corpus unless --limit says otherwise; full: every file, real "
        "training",
    )
    seed: int = Field(0, description="Seed of splits, initialisation and sampling")
    task_runner: TaskRunnerName = Field(
        "threads", description="threads: a bounded pool; dask: a LocalCluster or dask_address"
    )
    workers: int = Field(2, ge=1, description="Threads, or Dask workers of the LocalCluster")
    dask_address: str | None = Field(
        None, description="Existing Dask scheduler (tcp://host:8786); none: a local cluster"
    )
    nproc_per_node: int = Field(
        1,
        ge=1,
        description="Training processes on this machine (one per GPU); above 1, or with "
        "--nnodes, the train stage runs data-parallel under torchrun (DDP); 1: one process",
    )
    nnodes: int = Field(1, ge=1, description="Machines training together (docs/DEPLOY.md)")
    node_rank: int = Field(
        0,
        ge=0,
        description="This machine's rank among --nnodes; only rank 0 writes, so other ranks "
        "run the train stage alone",
    )
    rdzv_endpoint: str | None = Field(
        None, description="host:port of node 0 where the machines of --nnodes meet"
    )
    compile: bool = Field(
        False, description="Train through torch.compile (a GPU's speed-up; a minute to compile)"
    )

    @model_validator(mode="after")
    def _check_launch(self) -> Self:
        self.launch()  # a node rank out of range or a missing endpoint is refused up front
        return self

    def launch(self) -> LaunchConfig:
        """How the train stage's processes are started (`models.distributed`)."""
        return LaunchConfig(self.nproc_per_node, self.nnodes, self.node_rank, self.rdzv_endpoint)

    def training_fields(self) -> dict[str, Any]:
        """The fields that say how training runs, for a flow that runs another flow."""
        names = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "compile")
        return {name: getattr(self, name) for name in names}

    def node_stages(self, stages: list[str]) -> list[str]:
        """The stages this machine runs: all on node 0; on the other nodes of a multi-node run
        the train stage alone, since they only lend ranks to the run node 0 writes."""
        return stages if self.launch().writes_outputs else [s for s in stages if s == "train"]


class CorpusParams(FlowParams):
    """A domain flow's corpus fields; subclasses name their built-in corpora."""

    BUILTIN_CORPORA: ClassVar[frozenset[str]] = frozenset()
    QUICK_LIMIT: ClassVar[int]

    corpus: str = Field("bach", description="A built-in corpus name, or a path")
    limit: int | None = Field(None, ge=1, description="Most files to use; none: all")
    valid_fraction: float = Field(0.1, ge=0, lt=1, description="Share of files for valid")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of files for test")

    def corpus_names(self) -> list[str]:
        """The corpora `corpus` names (one; the audio flow also takes a mix of several)."""
        return [self.corpus]

    def corpus_limit(self) -> int | None:
        """`limit`, or the quick subset (of each) of built-in corpora at the tiny and quick
        profiles."""
        builtin = all(name in self.BUILTIN_CORPORA for name in self.corpus_names())
        if self.limit is None and self.profile != "full" and builtin:
            return self.QUICK_LIMIT
        return self.limit


class CorpusResult(BaseModel):
    """What a domain flow returns in both domains: where its data went, the manifest's counts,
    the model run and its metrics; subclasses add their own counts and outputs."""

    data_dir: str
    manifest: str
    n_files: int = 0
    n_ok: int = 0
    n_rejected: int = 0
    n_duplicate: int = 0
    reused: bool = False
    run_dir: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def under(cls, data_dir: str, domain: str, outputs: Mapping[str, str], **fields: Any) -> Self:
        """The result with its paths filled in, absolute: the manifest and `outputs` (field ->
        path relative to `data_dir/<domain>`)."""
        root = Path(data_dir).resolve()
        named = {"manifest": "manifest.parquet", **outputs}
        paths = {field: str(root / domain / relative) for field, relative in named.items()}
        return cls(data_dir=str(root), **paths, **fields)
