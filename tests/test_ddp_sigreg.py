"""SIGReg under DDP: two gloo processes holding half a batch each get the whole batch's statistic and gradient.

Each process runs the same small encoder, wrapped in DistributedDataParallel, on its half
of one batch and projects on the same random directions (the same generator seed). With
SIGReg's all-reduce, the statistic and the DDP-averaged parameter gradient equal those of
one process holding the whole batch; without it (per device, as in the authors' copy) they
do not (DESIGN.md "Rules").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from harness.trial.distributed import free_port
from models.blocks.sigreg import sigreg

WORLD_SIZE = 2
TIME_STEPS, BATCH, IN_DIM, DIM = 2, 128, 12, 16
DIRECTIONS, DIRECTION_SEED = 256, 5


def encoder() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(IN_DIM, DIM)


def whole_batch() -> torch.Tensor:
    """(T, B, IN_DIM) inputs whose embeddings are far from an isotropic Gaussian, so the statistic grows with B."""
    torch.manual_seed(1)
    return 1.5 * torch.randn(TIME_STEPS, BATCH, IN_DIM) + 0.5


def statistic_and_gradient(model: nn.Module, x: torch.Tensor, all_reduce: bool) -> tuple[float, np.ndarray]:
    """SIGReg of the embeddings of ``x`` and the gradient of every parameter, flattened."""
    model.zero_grad()
    generator = torch.Generator().manual_seed(DIRECTION_SEED)
    value = sigreg(model(x), num_directions=DIRECTIONS, generator=generator, all_reduce=all_reduce)
    value.backward()
    return value.item(), torch.cat([p.grad.flatten() for p in model.parameters()]).numpy().copy()


def _rank(rank: int, port: int, queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        half = whole_batch().chunk(WORLD_SIZE, dim=1)[rank]  # (T, B/2, IN_DIM)
        model = DistributedDataParallel(encoder())
        queue.put((rank, {mode: statistic_and_gradient(model, half, mode) for mode in (True, False)}))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def per_rank() -> dict[int, dict[bool, tuple[float, np.ndarray]]]:
    """{rank: {all_reduce: (statistic, DDP-averaged gradient)}} from two gloo processes."""
    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_rank, args=(free_port(), queue), nprocs=WORLD_SIZE, start_method="spawn")
    return dict(queue.get() for _ in range(WORLD_SIZE))


@pytest.fixture(scope="module")
def one_process() -> tuple[float, np.ndarray]:
    return statistic_and_gradient(encoder(), whole_batch(), all_reduce=False)


def test_two_processes_with_all_reduce_match_one_process_holding_the_whole_batch(per_rank, one_process):
    value, gradient = one_process
    for rank in range(WORLD_SIZE):
        ddp_value, ddp_gradient = per_rank[rank][True]
        assert ddp_value == pytest.approx(value, rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(ddp_gradient, gradient, rtol=1e-5, atol=1e-5)


def test_per_device_sigreg_differs_from_the_whole_batch(per_rank, one_process):
    value, gradient = one_process
    per_device = [per_rank[rank][False][0] for rank in range(WORLD_SIZE)]
    # Each device sees N/2 samples: the statistic (N times a CF distance) is about halved, and so is its pull.
    assert all(v < 0.75 * value for v in per_device), (per_device, value)
    averaged = per_rank[0][False][1]  # DDP averages the per-device gradients: the same on every rank
    np.testing.assert_allclose(per_rank[1][False][1], averaged, rtol=1e-5, atol=1e-6)
    assert np.abs(averaged - gradient).max() > 0.1 * np.abs(gradient).max()
