"""Process start-up and rendezvous for data-parallel training (DDP) of one model over several processes.

:func:`train_ddp` spawns ``world_size`` processes, joins them in one process group, and has
each run :func:`harness.trial.training.train` with a :class:`DistributedContext`; the loop
itself (sharded batches, DDP, SIGReg on the global batch) lives there. Rank 0 saves the
outcome, which the parent reads back.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor
from torch.utils.data import Dataset

from harness.trial.training import (
    DistributedContext,
    TrainConfig,
    TrainingDiverged,
    TrainStats,
    local_batch_size,
    train,
)
from models.world_model import WorldModel

BACKENDS = ("gloo", "nccl")  # gloo: CPU processes; nccl: one GPU per process
RESULT_FILE = "outcome.pt"  # rank 0: {state_dict, stats} or {diverged: (step, value)}


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (for the process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_ddp(
    model_builder: Callable[[], WorldModel],
    dataset: Dataset,
    cfg: TrainConfig,
    seed: int,
    world_size: int,
    backend: str = "gloo",
    rank_states_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, Tensor], TrainStats]:
    """Train one model with DDP over ``world_size`` spawned processes; returns (rank 0's state dict, stats).

    ``model_builder`` and ``dataset`` are pickled into each process (a module-level function
    or a ``functools.partial`` of one; a dataset whose arrays are cheap to pickle); every
    process builds its replica after ``torch.manual_seed(seed)``. ``cfg.batch_size`` is the
    global batch. ``backend`` is "gloo" (CPU) or "nccl" (process r on ``cuda:r``). The stats
    are rank 0's: losses averaged over all processes, throughput of the whole group,
    diagnostics of rank 0's share of the last batch. With ``rank_states_dir``, every rank
    also saves its final state dict there as ``rank<r>.pt``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    local_batch_size(cfg, len(dataset), world_size)  # a batch that cannot be split fails here, not in a child
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise ValueError(f"nccl needs one GPU per process: {world_size} asked, {torch.cuda.device_count()} visible")
    with tempfile.TemporaryDirectory(prefix="wmbench-ddp-") as scratch:
        out = Path(rank_states_dir) if rank_states_dir is not None else Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        init_method = f"tcp://127.0.0.1:{free_port()}"
        keep_rank_states = rank_states_dir is not None
        mp.start_processes(
            _worker,
            args=(world_size, backend, init_method, model_builder, dataset, cfg, seed, str(out), keep_rank_states),
            nprocs=world_size,
            start_method="spawn",
        )
        outcome = torch.load(out / RESULT_FILE, map_location="cpu", weights_only=True)
    if "diverged" in outcome:
        raise TrainingDiverged(*outcome["diverged"])
    return outcome["state_dict"], TrainStats(**outcome["stats"])


def _worker(
    rank: int,
    world_size: int,
    backend: str,
    init_method: str,
    model_builder: Callable[[], WorldModel],
    dataset: Dataset,
    cfg: TrainConfig,
    seed: int,
    out: str,
    keep_rank_states: bool,
) -> None:
    """One process of the group: join it, build the replica, train it, and (rank 0) save the outcome."""
    if backend == "nccl":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, torch.get_num_threads() // world_size))
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    try:
        torch.manual_seed(seed)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
        model = model_builder()
        try:
            stats = train(model, dataset, cfg, device, seed, context=DistributedContext(rank, world_size))
        except TrainingDiverged as diverged:  # every rank sees the same all-reduced loss, so all stop here
            outcome = {"diverged": (diverged.step, diverged.value)}
        else:
            state_dict = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
            outcome = {"state_dict": state_dict, "stats": dataclasses.asdict(stats)}
            if keep_rank_states:
                torch.save(state_dict, Path(out, f"rank{rank}.pt"))
        if rank == 0:
            torch.save(outcome, Path(out, RESULT_FILE))
    finally:
        # The DDP wrapper sits in a reference cycle that holds the process group: collect it while the
        # group is up, so that destroy_process_group stops gloo's threads; left to interpreter exit,
        # their teardown aborted a process (SIGABRT) in ~1 of 25 runs here, 0 of 100 with this.
        gc.collect()
        dist.destroy_process_group()
