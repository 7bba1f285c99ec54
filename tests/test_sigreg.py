"""SIGReg: the published reference values, a slow direct computation, gradients and the DDP all-reduce."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy.integrate import quad

from models.blocks.sigreg import (
    SIGReg,
    _CharacteristicSums,
    empirical_cf,
    knots_and_weights,
    random_directions,
    sigreg,
)

BATCH, DIM = 512, 64  # the batch shape of REFERENCE.md's measured values


def mean_statistic(make_batch, draws: int = 4) -> float:
    """SIGReg averaged over a few batches and fresh directions (the statistic is noisy)."""
    torch.manual_seed(0)
    return float(np.mean([sigreg(make_batch()).item() for _ in range(draws)]))


def test_sigreg_matches_published_values_for_reference_batches():
    gaussian = mean_statistic(lambda: torch.randn(BATCH, DIM))
    rank_one = mean_statistic(lambda: torch.randn(BATCH, 1) * torch.randn(1, DIM))
    # a constant batch's expectation over directions is 2·N·∫_0^3 (1 − e^{−t²}) e^{−t²/2} dt ≈ 540; one draw varies ±12
    collapsed = mean_statistic(lambda: torch.ones(BATCH, DIM) + 1e-3 * torch.randn(BATCH, DIM), draws=8)
    scaled_shifted = mean_statistic(lambda: 3 * torch.randn(BATCH, DIM) + 2)
    # REFERENCE.md: ≈1.0, ≈86, ≈526, ≈377 in the authors' library (with the factor 2).
    assert gaussian == pytest.approx(1.0, abs=0.3)
    assert rank_one == pytest.approx(86, rel=0.15)
    assert collapsed == pytest.approx(526, rel=0.05)
    assert scaled_shifted == pytest.approx(377, rel=0.05)


def test_sigreg_separates_gaussian_from_collapsed():
    torch.manual_seed(1)
    gaussian = sigreg(torch.randn(BATCH, DIM)).item()
    shifted = sigreg(torch.randn(BATCH, DIM) + 1.0).item()
    rank_one = sigreg(torch.randn(BATCH, 1) * torch.randn(1, DIM)).item()
    collapsed = sigreg(torch.ones(BATCH, DIM)).item()
    assert gaussian < 3 < shifted < collapsed
    assert gaussian * 20 < rank_one < collapsed


def test_sigreg_averages_over_time_steps():
    torch.manual_seed(2)
    gaussian, collapsed = torch.randn(BATCH, DIM), torch.ones(BATCH, DIM)
    per_step = torch.stack([gaussian, collapsed])  # (T=2, B, D)
    generator = torch.Generator().manual_seed(0)
    both = sigreg(per_step, generator=generator).item()
    generator = torch.Generator().manual_seed(0)
    separate = [sigreg(gaussian, generator=generator).item()]
    generator = torch.Generator().manual_seed(0)
    separate.append(sigreg(collapsed, generator=generator).item())
    assert both == pytest.approx(np.mean(separate), rel=1e-5)


def test_sigreg_matches_direct_epps_pulley_integral_over_real_line():
    """The trapezoid on [0, 3] with the factor 2 approximates N·∫_ℝ |φ_N − φ|² e^{−t²/2} dt."""
    batch, dim, directions = 32, 4, 3
    for scale, shift in [(1.0, 0.0), (1.5, 0.5), (0.5, 0.0), (2.0, 1.0)]:
        torch.manual_seed(0)
        z = scale * torch.randn(batch, dim, dtype=torch.float64) + shift
        fast = sigreg(z, num_directions=directions, generator=torch.Generator().manual_seed(3)).item()
        unit = random_directions(dim, directions, torch.device("cpu"), torch.Generator().manual_seed(3))
        projections = (z @ unit.double()).numpy()
        slow = []
        for x in projections.T:

            def integrand(t: float, x: np.ndarray = x) -> float:
                cf_distance = (np.cos(t * x).mean() - np.exp(-(t**2) / 2)) ** 2 + np.sin(t * x).mean() ** 2
                return cf_distance * np.exp(-(t**2) / 2)

            slow.append(batch * quad(integrand, -np.inf, np.inf, limit=200)[0])
        # measured trapezoid + truncation error here is below 2.1%
        assert fast == pytest.approx(np.mean(slow), rel=0.03), (scale, shift)


def test_sigreg_gradient_flows_and_pulls_towards_gaussian():
    torch.manual_seed(3)
    z = (3 * torch.randn(256, 16) + 2).requires_grad_()
    regulariser = SIGReg(num_directions=256)
    before = regulariser(z)
    before.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = z - 0.5 * z.grad / z.grad.norm(dim=1, keepdim=True).mean()
    assert regulariser(stepped).item() < before.item()


def test_characteristic_sums_by_powers_equal_cosines_and_sines_and_their_autograd():
    """The sums by powers of e^{i·dt·x} are those of cos(t·x) and sin(t·x), and their Horner backward is the
    derivative autograd takes through the cosines and sines (fp64 here; fp32 agrees to its rounding)."""
    generator = torch.Generator().manual_seed(0)
    projections = (3 * torch.randn(2, 12, 5, dtype=torch.float64, generator=generator)).requires_grad_()  # (T, B, M)
    t, _ = knots_and_weights(device="cpu")
    dt, knots = float(t[1]), len(t)
    assert torch.autograd.gradcheck(_CharacteristicSums.apply, (projections, dt, knots))
    weights = torch.randn(2, 2, 5, knots, dtype=torch.float64, generator=generator)  # any upstream gradient
    tx = projections.unsqueeze(-1) * t.double()  # (T, B, M, K)
    plain_cos, plain_sin = tx.cos().sum(1), tx.sin().sum(1)
    (plain,) = torch.autograd.grad((plain_cos * weights[0] + plain_sin * weights[1]).sum(), projections)
    cos_sum, sin_sum = _CharacteristicSums.apply(projections, dt, knots)
    torch.testing.assert_close(cos_sum, plain_cos)
    torch.testing.assert_close(sin_sum, plain_sin)
    (fast,) = torch.autograd.grad((cos_sum * weights[0] + sin_sum * weights[1]).sum(), projections)
    torch.testing.assert_close(fast, plain)
    single = projections.float().detach()  # fp32: powers carry one rounding per knot
    for by_powers, direct in zip(_CharacteristicSums.apply(single, dt, knots), (plain_cos, plain_sin), strict=True):
        torch.testing.assert_close(by_powers.double(), direct.detach(), atol=1e-5, rtol=1e-5)


def test_characteristic_function_under_torch_compile_is_eager_s_without_complex_code(recwarn):
    """``train.compile``: under torch.compile the CF comes from cosines and sines, which inductor fuses (it
    generates no code for complex ops and warns), with eager's values and gradients."""
    generator = torch.Generator().manual_seed(0)
    projections = (1.5 * torch.randn(2, 32, 8, generator=generator)).requires_grad_()  # (T, B, M)
    eager = empirical_cf(projections)[:2]
    compiled = torch.compile(empirical_cf, fullgraph=True)(projections)[:2]
    upstream = torch.randn(2, *eager[0].shape, generator=generator)
    gradients = [torch.autograd.grad(sum((cf * w).sum() for cf, w in zip(pair, upstream, strict=True)), projections)[0]
                 for pair in (eager, compiled)]  # fmt: skip
    for fast, plain in zip((*compiled, gradients[1]), (*eager, gradients[0]), strict=True):
        torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    assert not [w for w in recwarn if "complex" in str(w.message)]


def test_sigreg_is_computed_in_float32_under_bf16_autocast():
    z = torch.randn(BATCH, DIM)
    exact = sigreg(z, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = sigreg(z.bfloat16(), generator=torch.Generator().manual_seed(0))
    assert autocast.dtype == torch.float32
    assert autocast.item() == pytest.approx(exact.item(), rel=0.05)  # only the bf16 input rounding differs


def test_sigreg_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(T, B, D\)"):
        sigreg(torch.randn(2, 3, 4, 5))


def _distributed_worker(rank: int, world_size: int, init_file: str, z: torch.Tensor, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        local = z.chunk(world_size, dim=1)[rank].clone().requires_grad_()
        value = sigreg(local, num_directions=64, generator=torch.Generator().manual_seed(rank), all_reduce=True)
        value.backward()
        queue.put((rank, value.item(), local.grad.numpy()))  # numpy: tensors shared by fd die with the worker
    finally:
        dist.destroy_process_group()


def test_sigreg_all_reduce_equals_statistic_of_global_batch(tmp_path):
    """Two processes holding half a batch each get the whole batch's statistic (DESIGN.md, DDP)."""
    world_size = 2
    torch.manual_seed(4)
    z = torch.randn(2, 64, 8) * 1.5 + 0.3  # (T, B, D)
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(
        _distributed_worker,
        args=(world_size, str(tmp_path / "init"), z, queue),
        nprocs=world_size,
        start_method="spawn",
    )
    results = sorted(queue.get() for _ in range(world_size))

    whole = z.clone().requires_grad_()
    # rank 0's directions are broadcast, so the single-process reference uses rank 0's seed
    expected = sigreg(whole, num_directions=64, generator=torch.Generator().manual_seed(0))
    expected.backward()
    for rank, value, grad in results:
        assert value == pytest.approx(expected.item(), rel=1e-5)
        # Each rank's gradient is world_size × its share of the global gradient; DDP's
        # averaging of parameter gradients then yields exactly the global gradient.
        torch.testing.assert_close(torch.from_numpy(grad), world_size * whole.grad.chunk(world_size, dim=1)[rank])
