"""SIGReg: the Sketched Isotropic Gaussian Regulariser of LeJEPA (Balestriero & LeCun, arXiv 2511.08544).

Pushes a batch of embeddings towards an isotropic standard Gaussian, which rules out
collapse. The batch is projected on M random unit directions; for each 1-D projection the
Epps–Pulley statistic measures the weighted squared distance between its empirical
characteristic function and the standard normal's,

    EP = N · ∫ |φ_N(t) − exp(−t²/2)|² · exp(−t²/2) dt   over the real line,

with φ_N(t) = mean over the batch of exp(i·t·x). The integrand is even in t, so the
integral is twice the integral over [0, ∞), truncated to [0, 3] and taken by the trapezoid
rule on 17 knots, as the authors' library does (their λ assumes that factor 2).

The statistic is formed in two steps, so that a DDP run can all-reduce the characteristic
function means across processes before forming it (DESIGN.md "Rules"): the authors' copy
computes it per device, which users traced a Push-T drop from 96% to ~56% to.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from einops import rearrange
from torch import Tensor, nn

# Published defaults (REFERENCE.md "SIGReg"; the authors' library).
NUM_DIRECTIONS = 1024
NUM_KNOTS = 17
T_MAX = 3.0


def random_directions(dim: int, num: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
    """M Gaussian directions normalised to unit length, as columns: (D, M)."""
    directions = torch.randn(dim, num, device=device, generator=generator)
    return directions / directions.norm(dim=0, keepdim=True)


def knots_and_weights(num_knots: int = NUM_KNOTS, t_max: float = T_MAX, device=None) -> tuple[Tensor, Tensor]:
    """Knots t_k on [0, t_max] and quadrature weights for ∫ over the real line of an even integrand.

    Trapezoid weights on [0, t_max] doubled for the even integrand (2·dt inside, dt at the
    ends), times the Gaussian weight exp(−t²/2).
    """
    t = torch.linspace(0.0, t_max, num_knots, device=device)
    dt = t_max / (num_knots - 1)
    trapezoid = torch.full((num_knots,), 2.0 * dt, device=device)
    trapezoid[0] = trapezoid[-1] = dt
    return t, trapezoid * torch.exp(-t.square() / 2.0)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward sums the gradients too.

    Every process forms the same global statistic, so each receives the same upstream
    gradient; summing it hands each process world_size × its share of the global
    gradient, and DDP's averaging of parameter gradients turns that into the global one.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        reduced = tensor.clone()
        dist.all_reduce(reduced)
        return reduced

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        reduced = grad.clone()
        dist.all_reduce(reduced)
        return reduced


class _CharacteristicSums(torch.autograd.Function):
    """Σ over the batch of cos(t_k·x) and sin(t_k·x) at the knots t_k = k·dt: projections (T, B, M) -> two (T, M, K).

    The sums are those of e^{i·t_k·x}, and at equally spaced knots e^{i·k·dt·x} = (e^{i·dt·x})^k: each knot's
    term is the last one's times e^{i·dt·x}, one complex multiply where a cosine and a sine were (forward and
    backward at LeWM-tiny's training shapes: 10 ms against 30-40 on one CPU thread, the same to ~1e-6 relative
    in fp32). The backward,
    Σ_k t_k·(g_sin,k·cos(t_k·x) − g_cos,k·sin(t_k·x)) = Re Σ_k t_k·(g_sin,k + i·g_cos,k)·z^k with z = e^{i·dt·x},
    is a polynomial in z taken by Horner's rule, so only z is kept for it.
    """

    @staticmethod
    def forward(ctx, projections: Tensor, dt: float, num_knots: int) -> tuple[Tensor, Tensor]:
        steps, batch, directions = projections.shape
        step = torch.polar(torch.ones_like(projections), projections * dt)  # e^{i·dt·x}, (T, B, M) complex
        sums = step.new_empty(steps, directions, num_knots)  # (T, M, K)
        sums[..., 0] = batch  # t_0 = 0
        power = step
        for k in range(1, num_knots):
            sums[..., k] = power.sum(dim=1)
            if k + 1 < num_knots:
                power = power * step
        ctx.save_for_backward(step)
        ctx.dt = dt
        return sums.real.contiguous(), sums.imag.contiguous()

    @staticmethod
    def backward(ctx, grad_cos: Tensor, grad_sin: Tensor) -> tuple[Tensor, None, None]:
        (step,) = ctx.saved_tensors
        num_knots = grad_cos.shape[-1]
        t = torch.arange(num_knots, dtype=grad_cos.dtype, device=grad_cos.device) * ctx.dt
        coefficients = torch.complex(grad_sin * t, grad_cos * t).unsqueeze(1)  # (T, 1, M, K)
        polynomial = coefficients[..., -1]
        for k in range(num_knots - 2, 0, -1):
            polynomial = polynomial * step + coefficients[..., k]
        return (polynomial * step).real, None, None  # (T, B, M); the k = 0 term is 0


def empirical_cf(
    projections: Tensor, num_knots: int = NUM_KNOTS, t_max: float = T_MAX, all_reduce: bool = False
) -> tuple[Tensor, Tensor, int]:
    """Empirical characteristic function of each projection at the knots of :func:`knots_and_weights`.

    projections (T, B, M) -> mean cos(t·x) and mean sin(t·x) over the batch, each
    (T, M, K), and the batch size they average over. With ``all_reduce`` and an initialised
    process group, the means are over the global batch of all processes (differentiably).
    """
    if torch.compiler.is_compiling():  # inductor fuses these into one kernel, and generates no code for complex ops
        t, _ = knots_and_weights(num_knots, t_max, projections.device)
        tx = projections.unsqueeze(-1) * t  # (T, B, M, K)
        cos_sum, sin_sum = tx.cos().sum(dim=1), tx.sin().sum(dim=1)
    else:
        dt = t_max / (num_knots - 1) if num_knots > 1 else 0.0  # the knots' spacing
        cos_sum, sin_sum = _CharacteristicSums.apply(projections, dt, num_knots)  # (T, M, K) each
    batch_size = projections.shape[1]
    if all_reduce and dist.is_available() and dist.is_initialized():
        cos_sum, sin_sum = _AllReduceSum.apply(cos_sum), _AllReduceSum.apply(sin_sum)
        count = torch.tensor([batch_size], device=projections.device)
        dist.all_reduce(count)
        batch_size = int(count.item())
    return cos_sum / batch_size, sin_sum / batch_size, batch_size


def epps_pulley(cos_mean: Tensor, sin_mean: Tensor, t: Tensor, weights: Tensor, batch_size: int) -> Tensor:
    """Epps–Pulley statistic per projection from its empirical CF: (T, M, K) -> (T, M).

    The standard normal's CF is real, exp(−t²/2), so the squared distance is
    (mean cos − exp(−t²/2))² + (mean sin)², integrated with ``weights`` and scaled by N.
    """
    target = torch.exp(-t.square() / 2.0)
    distance = (cos_mean - target).square() + sin_mean.square()  # (T, M, K)
    return batch_size * (distance @ weights)


def sigreg(
    z: Tensor,
    num_directions: int = NUM_DIRECTIONS,
    num_knots: int = NUM_KNOTS,
    t_max: float = T_MAX,
    generator: torch.Generator | None = None,
    all_reduce: bool = False,
) -> Tensor:
    """SIGReg of a batch of embeddings, (T, B, D) or (B, D) -> scalar.

    The Epps–Pulley statistic averaged over fresh random directions and time steps;
    ≈1 for a standard Gaussian batch, hundreds for a collapsed one.
    """
    if z.ndim == 2:
        z = rearrange(z, "b d -> 1 b d")
    if z.ndim != 3:
        raise ValueError(f"sigreg expects embeddings of shape (T, B, D) or (B, D), got {tuple(z.shape)}")
    directions = random_directions(z.shape[-1], num_directions, z.device, generator)
    if all_reduce and dist.is_available() and dist.is_initialized():
        dist.broadcast(directions, src=0)  # every process must project on the same directions
    t, weights = knots_and_weights(num_knots, t_max, z.device)
    with torch.autocast(z.device.type, enabled=False):  # the CF of bf16 projections is too coarse
        projections = z.float() @ directions  # (T, B, M)
        cos_mean, sin_mean, batch_size = empirical_cf(projections, num_knots, t_max, all_reduce)
        return epps_pulley(cos_mean, sin_mean, t, weights, batch_size).mean()


class SIGReg(nn.Module):
    """SIGReg as a module, holding its published hyperparameters."""

    def __init__(
        self,
        num_directions: int = NUM_DIRECTIONS,
        num_knots: int = NUM_KNOTS,
        t_max: float = T_MAX,
        all_reduce: bool = False,
    ) -> None:
        super().__init__()
        self.num_directions = num_directions
        self.num_knots = num_knots
        self.t_max = t_max
        self.all_reduce = all_reduce

    def forward(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(T, B, D) or (B, D) -> scalar statistic."""
        return sigreg(z, self.num_directions, self.num_knots, self.t_max, generator, self.all_reduce)

    def extra_repr(self) -> str:
        return f"num_directions={self.num_directions}, num_knots={self.num_knots}, t_max={self.t_max}"
