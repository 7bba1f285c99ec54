"""Data-parallel training of one model over several processes (DDP), for a trial given several devices.

Each of ``world_size`` processes holds a replica of the model and a disjoint share of every
global batch (a :class:`~torch.utils.data.DistributedSampler`, ``cfg.batch_size / world_size``
windows each). DDP averages the parameter gradients, so every replica takes the same step.
SIGReg is a statistic of the whole batch, so its characteristic-function means are
all-reduced across the processes before it is formed (DESIGN.md "Rules"; the authors'
copy forms it per device). Otherwise the recipe is :func:`harness.trial.training.train`'s: AdamW,
warm-up then cosine, gradient clipping, bf16 autocast on GPU, the same log records.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from harness.trial.training import (
    LogInterval,
    TrainConfig,
    TrainingDiverged,
    TrainStats,
    latent_batch_diagnostics,
    log_due,
    lr_factor,
)
from models.blocks.sigreg import SIGReg
from models.world_model import WorldModel

logger = logging.getLogger(__name__)

BACKENDS = ("gloo", "nccl")  # gloo: CPU processes; nccl: one GPU per process
RESULT_FILE = "outcome.pt"  # rank 0: {state_dict, stats} or {diverged}


class _LossForward(nn.Module):
    """Makes ``model.loss`` the forward pass, so DDP's gradient hooks see every step."""

    def __init__(self, model: WorldModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.model.loss(batch)


def enable_sigreg_all_reduce(model: nn.Module) -> int:
    """Switch every SIGReg module inside ``model`` to the global-batch statistic; returns how many."""
    regularisers = [module for module in model.modules() if isinstance(module, SIGReg)]
    for regulariser in regularisers:
        regulariser.all_reduce = True
    return len(regularisers)


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (for the process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_ddp(
    model_builder: Callable[[], WorldModel],
    dataset: Dataset,
    cfg: TrainConfig,
    world_size: int,
    backend: str = "gloo",
    rank_states_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, Tensor], TrainStats]:
    """Train one model with DDP over ``world_size`` spawned processes; returns (rank 0's state dict, stats).

    ``model_builder`` and ``dataset`` are pickled into each process (a module-level function
    or a ``functools.partial`` of one; a dataset whose arrays are cheap to pickle).
    ``cfg.batch_size`` is the global batch. ``backend`` is "gloo" (CPU) or "nccl" (process r
    on ``cuda:r``). The stats are rank 0's: losses averaged over all processes, throughput
    of the whole group, diagnostics of rank 0's share of the last batch. With
    ``rank_states_dir``, every rank also saves its final state dict there as ``rank<r>.pt``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if cfg.steps < 1:
        raise ValueError(f"TrainConfig.steps must be at least 1, got {cfg.steps}")
    if cfg.batch_size % world_size:
        raise ValueError(f"the batch size {cfg.batch_size} must divide evenly over {world_size} processes")
    if len(dataset) < world_size:
        raise ValueError(f"the training dataset has {len(dataset)} windows, fewer than {world_size} processes")
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise ValueError(f"nccl needs one GPU per process: {world_size} asked, {torch.cuda.device_count()} visible")
    with tempfile.TemporaryDirectory(prefix="wmbench-ddp-") as scratch:
        out = Path(rank_states_dir) if rank_states_dir is not None else Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        init_method = f"tcp://127.0.0.1:{free_port()}"
        mp.start_processes(
            _worker,
            args=(world_size, backend, init_method, model_builder, dataset, cfg, str(out), rank_states_dir is not None),
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
    out: str,
    keep_rank_states: bool,
) -> None:
    """One process of the group: build, wrap, train, and (rank 0) save the outcome."""
    if backend == "nccl":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, torch.get_num_threads() // world_size))
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
    try:
        outcome = _train_rank(rank, world_size, model_builder, dataset, cfg, device)
        state_dict = outcome.get("state_dict")
        if keep_rank_states and state_dict is not None:
            torch.save(state_dict, Path(out, f"rank{rank}.pt"))
        if rank == 0:
            torch.save(outcome, Path(out, RESULT_FILE))
    finally:
        dist.destroy_process_group()


def _train_rank(
    rank: int,
    world_size: int,
    model_builder: Callable[[], WorldModel],
    dataset: Dataset,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, Any]:
    """The training loop on one rank; returns ``{state_dict, stats}`` or ``{diverged: (step, value)}``."""
    torch.manual_seed(cfg.seed)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    model = model_builder()
    if enable_sigreg_all_reduce(model) == 0:
        logger.info("%s holds no SIGReg module: nothing to all-reduce beyond the gradients", type(model).__name__)
    if device.type == "cuda":
        # BatchNorm statistics of the global batch too; SyncBatchNorm keeps BatchNorm's state-dict keys.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    model.prepare(dataset)
    model.train()
    wrapped = DistributedDataParallel(_LossForward(model), device_ids=[device.index] if device.type == "cuda" else None)
    torch.manual_seed(cfg.seed + rank)  # dropout masks differ across ranks, as for independent samples
    step_fn = torch.compile(wrapped) if cfg.compile else wrapped
    parameters = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg.steps, cfg.warmup_frac))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
    batches = _shard_batches(dataset, cfg, rank, world_size, device)

    history: list[dict[str, float]] = []
    interval = LogInterval(cfg.steps)
    first_loss, diagnostics = math.nan, {}
    began = time.perf_counter()
    train_seconds = 0.0
    for step in range(cfg.steps):
        step_began = time.perf_counter()
        batch = next(batches)
        with autocast:
            terms = step_fn(batch)
        names = sorted(terms)
        # Every rank sees the same global mean of each term: one divergence verdict, one log.
        means = torch.stack([terms[name].detach().float() for name in names])
        dist.all_reduce(means)
        means = dict(zip(names, (means / world_size).tolist(), strict=True))
        if not math.isfinite(means["loss"]):
            return {"diverged": (step, means["loss"])}
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()  # DDP averages the gradients across ranks here
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(parameters, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        if step == 0:
            first_loss = means["loss"]
        interval.add(means, len(batch["pixels"]) * world_size)
        train_seconds += time.perf_counter() - step_began

        if log_due(step, cfg):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            record = interval.flush(step + 1, scheduler.get_last_lr()[0])
            if rank == 0:
                diagnostics = latent_batch_diagnostics(model, batch)  # rank 0's share of the batch, no collectives
                record |= diagnostics
                history.append(record)
                logger.info(
                    "step %d: %s", step + 1, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step")
                )

    # BatchNorm running statistics were updated on each rank's share in the last forward;
    # take rank 0's everywhere so that every replica ends with the same state.
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
    seconds = time.perf_counter() - began
    stats = TrainStats(
        steps=cfg.steps,
        seconds=seconds,
        samples_per_s=cfg.steps * cfg.batch_size / max(train_seconds, 1e-9),
        first_loss=first_loss,
        final_loss=interval.final_loss,
        history=history,
        diagnostics=diagnostics,
    )
    state_dict = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    return {"state_dict": state_dict, "stats": dataclasses.asdict(stats)}


def _shard_batches(dataset: Dataset, cfg: TrainConfig, rank: int, world_size: int, device: torch.device):
    """This rank's share of every global batch, forever, reshuffled each epoch from the run's seed."""
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    local_batch = cfg.batch_size // world_size
    loader = DataLoader(
        dataset,
        batch_size=local_batch,
        sampler=sampler,
        drop_last=len(sampler) >= local_batch,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
    )
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for batch in loader:
            yield {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
        epoch += 1
