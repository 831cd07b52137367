"""Data-parallel training on torch.distributed (DDP), shared by both trainers.

A training run of world size W is W processes (ranks) started by torchrun, each with the whole
model. Both trainers draw the same global batch on every rank, in the order a single process
would (so a run of any world size trains on the same batches, and a run can resume at another
world size), and each rank computes on its own rows of it (`own_rows`); DDP averages the
gradients. Rank 0 alone validates and writes checkpoints, metrics and the final model; every
rank resumes from the one committed checkpoint. World size 1 is the plain single-process loop:
no process group, no wrapper, the same bytes as before DDP existed.

The launcher side (`LaunchConfig`, `launch_training`) runs `python -m torch.distributed.run`
as a child process: rank 0 writes `@progress`, `@log` and `@result` lines to its stdout, which
the caller turns into Prefect progress and log lines; when a rank dies, torchrun stops the
others and the launch fails with the ranks' error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from datasets.io import PROJECT_ROOT
from models.checkpoint import finish_checkpoint, has_checkpoint

# Lines rank 0 prints for the launching task (everything else it prints is passed on as is).
PROGRESS, LOG, RESULT = "@progress ", "@log ", "@result "
# Lines of the workers' output kept for the error of a failed launch.
ERROR_TAIL_LINES = 60


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a training run: `rank` of `world_size`, `local_rank` on
    its machine (its GPU). The default is the single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def backend() -> str:
    """nccl between GPUs, gloo between CPU processes."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed() -> Ranks:
    """The ranks torchrun's environment names, with the process group joined when there are
    several; without torchrun's variables, the single-process run."""
    ranks = Ranks(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )
    if ranks.distributed and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(ranks.local_rank)
        dist.init_process_group(backend())
        # Every process starts torch's global generator at the same seed, so without this the
        # ranks would drop out the same units of their rows; rank 0 keeps the single process's.
        if ranks.rank:
            torch.manual_seed(torch.initial_seed() + ranks.rank)
    return ranks


def close_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_device(ranks: Ranks) -> torch.device:
    """This rank's device: its own GPU when there are GPUs, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", ranks.local_rank)
    return torch.device("cpu")


def wrap_model(model: torch.nn.Module, ranks: Ranks) -> torch.nn.Module:
    """The module that trains: DDP around `model` when there are several ranks (its
    constructor also makes every rank start from rank 0's weights), else `model` itself."""
    if not ranks.distributed:
        return model
    device_ids = [ranks.local_rank] if torch.cuda.is_available() else None
    return DistributedDataParallel(model, device_ids=device_ids)


def check_batch(batch_size: int, ranks: Ranks) -> None:
    if batch_size % ranks.world_size:
        raise ValueError(
            f"a global batch of {batch_size} cannot be split evenly over {ranks.world_size} "
            "ranks; choose a batch size or a process count that divides it"
        )


def own_rows(batch: Any, ranks: Ranks) -> Any:
    """This rank's equal share of a global batch (rows along the first axis)."""
    if not ranks.distributed:
        return batch
    check_batch(len(batch), ranks)
    share = len(batch) // ranks.world_size
    return batch[ranks.rank * share : (ranks.rank + 1) * share]


def sum_over_ranks(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The sum over ranks of a tensor every rank holds (itself for one rank); not part of the
    autograd graph (see `differentiable_sum`)."""
    if not ranks.distributed:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def mean_over_ranks(values: list[float], ranks: Ranks) -> list[float]:
    """The means over ranks of numbers every rank computed (for logging), in one all-reduce."""
    if not ranks.distributed:
        return values
    total = sum_over_ranks(torch.tensor(values, dtype=torch.float64), ranks)
    return (total / ranks.world_size).tolist()


def differentiable_sum(ranks: Ranks) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """For a loss built from sums over the whole global batch (a norm of it): the all-reduce
    autograd passes gradients back through, or None on one rank. Every rank then computes the
    global loss, and DDP's averaging of the gradients gives exactly the single-process ones."""
    if not ranks.distributed:
        return None
    return _SumOverRanks.apply


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over the ranks, with the gradient summed over them on the way back
    (each rank's loss depends on every rank's rows). torch.distributed.nn.functional.all_reduce
    did this, and is deprecated for a functional collective without autograd."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.clone()
        dist.all_reduce(summed)
        return summed

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.clone()
        dist.all_reduce(summed)
        return summed


def gather_rows(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Every rank's rows joined in rank order: the global batch `own_rows` was cut from."""
    if not ranks.distributed:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(ranks.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def resumable(checkpoint_dir: str | Path, ranks: Ranks) -> bool:
    """`models.checkpoint.finish_checkpoint` for a run of any world size: rank 0 completes or
    discards a checkpoint a kill interrupted before the others look; then every rank says
    whether a whole one stands to resume from."""
    if ranks.is_main:
        finish_checkpoint(checkpoint_dir)
    barrier(ranks)
    return has_checkpoint(checkpoint_dir)


def report(prefix: str, payload: Any, ranks: Ranks) -> None:
    """Rank 0's line for the launching task (`PROGRESS`, `LOG` or `RESULT`)."""
    if ranks.is_main:
        print(prefix + json.dumps(payload, default=str), flush=True)


def run_rank(
    train: Callable[[Ranks, Callable[[float], None], Callable[[str], None]], dict[str, Any]],
) -> None:
    """A trainer's body as one rank of a run torchrun started: joins the process group, calls
    `train(ranks, progress, log)`, whose progress, log and result become rank 0's lines for
    the launching task, and leaves the group however it ends. A rank of several that trained
    to the end exits at once, without the interpreter's finalization."""
    ranks = init_distributed()
    try:
        result = train(
            ranks,
            lambda fraction: report(PROGRESS, fraction, ranks),
            lambda message: report(LOG, message, ranks),
        )
        report(RESULT, result, ranks)
    finally:
        close_distributed()
    if ranks.distributed:
        # Gloo's worker threads can outlive the process group and still hold tensors; freeing
        # them while the interpreter shuts down aborted a finished rank now and then ("terminate
        # called without an active exception", SIGABRT, no Python frame: pytorch/pytorch#179291),
        # and torchrun then failed a run whose outputs were all written. Everything is on disk
        # (atomic writes) and the result line printed, so nothing is left for finalization.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class DistributedTrainingError(RuntimeError):
    """A distributed training launch that failed; the message holds the ranks' error."""


@dataclass(frozen=True)
class LaunchConfig:
    """How many processes train and where: `nproc_per_node` on each of `nnodes` machines,
    this one being `node_rank`, meeting at `rdzv_endpoint` (host:port of node 0) when there are
    several machines."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ValueError("nproc_per_node and nnodes must be at least 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} is not in [0, {self.nnodes})")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("several nodes meet at a rendezvous: give rdzv_endpoint host:port")
        if self.rdzv_endpoint and ":" not in self.rdzv_endpoint:
            raise ValueError(f"rdzv_endpoint must be host:port, got {self.rdzv_endpoint!r}")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def writes_outputs(self) -> bool:
        """Whether this machine holds rank 0 (the one that writes)."""
        return self.node_rank == 0

    def torchrun_args(self) -> list[str]:
        """torchrun's options: a standalone rendezvous on one machine, else the static one at
        `rdzv_endpoint` with this machine's rank."""
        nodes = ["--nnodes", str(self.nnodes), "--nproc-per-node", str(self.nproc_per_node)]
        if self.nnodes == 1 and not self.rdzv_endpoint:
            return ["--standalone", *nodes]
        return [
            *nodes,
            "--node-rank",
            str(self.node_rank),
            "--rdzv-backend",
            "static",
            "--rdzv-endpoint",
            str(self.rdzv_endpoint),
        ]


def torchrun_command(launch: LaunchConfig, module: str, args: Sequence[str]) -> list[str]:
    """The command line that runs `python -m <module> <args>` on every rank of this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *launch.torchrun_args(),
        "--max-restarts",
        "0",
        "-m",
        module,
        *args,
    ]


def launch_training(
    launch: LaunchConfig,
    module: str,
    args: Sequence[str],
    progress: Callable[[float], None] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run a trainer's command-line entry under torchrun and wait for it: rank 0's progress and
    log lines go to `progress` and `log`, other output to `log` as well; returns rank 0's
    result (empty on a machine without rank 0). Raises `DistributedTrainingError` with the
    ranks' error when a rank fails."""
    command = torchrun_command(launch, module, args)
    log(f"launching {launch.world_size} ranks: {' '.join(command)}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    # torchrun's default of one thread per rank when OMP_NUM_THREADS is unset is right for a
    # node of GPUs; on CPUs each rank gets its share of the cores.
    if "OMP_NUM_THREADS" not in env and not torch.cuda.is_available():
        per_rank = max(1, (os.cpu_count() or 1) // launch.nproc_per_node)
        env["OMP_NUM_THREADS"] = str(per_rank)
    tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
    result: dict[str, Any] = {}
    with subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as process:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            if line.startswith(PROGRESS):
                if progress is not None:
                    progress(float(json.loads(line[len(PROGRESS) :])))
            elif line.startswith(LOG):
                log(json.loads(line[len(LOG) :]))
            elif line.startswith(RESULT):
                result = json.loads(line[len(RESULT) :])
            elif line.strip():
                tail.append(line)
                log(line)
        code = process.wait()
    if code != 0:
        raise DistributedTrainingError(
            f"distributed training ({launch.world_size} ranks, {module}) failed with exit "
            f"code {code}; the ranks' output ends:\n" + "\n".join(tail)
        )
    return result
