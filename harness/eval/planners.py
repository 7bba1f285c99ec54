"""Latent planning: CEM and MPPI over action-block sequences, batched over episodes.

The optimisers see only a cost function of candidate plans, so the same CEM plans
in a world model's latent space (:class:`LatentCost`) and in the true simulator
for the oracle. Shapes: K episodes planned together, S samples, H horizon blocks,
A action-block width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import Tensor

from models.world_model import WorldModel

CostFn = Callable[[Tensor], Tensor]
"""candidates (K, S, H, A) in [-1, 1] -> cost (K, S); lower is better."""


@dataclass
class CEM:
    """Cross-entropy method (LeWM defaults: 300 samples, 30 elites, 30 iterations, std 1)."""

    samples: int = 300
    iterations: int = 30
    elites: int = 30
    init_std: float = 1.0

    def optimize(self, cost_fn: CostFn, mean: Tensor, generator: torch.Generator) -> Tensor:
        """Refine plans ``mean`` (K, H, A); the first sample of every iteration is the mean itself."""
        std = torch.full_like(mean, self.init_std)
        for _ in range(self.iterations):
            candidates = _sample(mean, std, self.samples, generator)  # (K, S, H, A)
            cost = cost_fn(candidates)  # (K, S)
            elite_idx = cost.topk(self.elites, dim=1, largest=False).indices  # (K, E)
            elites = torch.gather(candidates, 1, elite_idx[..., None, None].expand(-1, -1, *mean.shape[1:]))
            mean, std = elites.mean(dim=1), elites.std(dim=1)
        return mean


@dataclass
class MPPI:
    """Model-predictive path integral: a cost-weighted average of Gaussian perturbations."""

    samples: int = 300
    iterations: int = 30
    init_std: float = 1.0
    temperature: float = 0.1

    def optimize(self, cost_fn: CostFn, mean: Tensor, generator: torch.Generator) -> Tensor:
        """Refine plans ``mean`` (K, H, A) by exponentially weighted averaging of samples."""
        std = torch.full_like(mean, self.init_std)
        for _ in range(self.iterations):
            candidates = _sample(mean, std, self.samples, generator)  # (K, S, H, A)
            cost = cost_fn(candidates)  # (K, S)
            normalised = (cost - cost.min(dim=1, keepdim=True).values) / (cost.std(dim=1, keepdim=True) + 1e-8)
            weights = torch.softmax(-normalised / self.temperature, dim=1)  # (K, S)
            mean = torch.einsum("ks,ksha->kha", weights, candidates)
        return mean


def _sample(mean: Tensor, std: Tensor, samples: int, generator: torch.Generator) -> Tensor:
    noise = torch.randn((mean.shape[0], samples, *mean.shape[1:]), generator=generator, device=mean.device)
    candidates = mean[:, None] + std[:, None] * noise  # (K, S, H, A)
    candidates[:, 0] = mean
    return candidates.clamp(-1.0, 1.0)


class LatentCost:
    """Terminal squared latent error ‖ẑ_H − z_goal‖² summed over tokens and dims (LeWM's cost).

    Built once per replanning call: the history and the goal are encoded once, and
    the candidates are rolled out in chunks of at most ``chunk`` (bounded memory,
    identical result).
    """

    def __init__(
        self, model: WorldModel, z_hist: Tensor, past_actions: Tensor, z_goal: Tensor, chunk: int | None = None
    ) -> None:
        self.model, self.z_hist, self.past_actions, self.z_goal, self.chunk = model, z_hist, past_actions, z_goal, chunk

    def __call__(self, candidates: Tensor) -> Tensor:
        episodes, samples = candidates.shape[:2]
        flat = rearrange(candidates, "k s h a -> (k s) h a")
        z_hist = repeat(self.z_hist, "k t n d -> (k s) t n d", s=samples)
        past = repeat(self.past_actions, "k t a -> (k s) t a", s=samples)
        goal = repeat(self.z_goal, "k n d -> (k s) n d", s=samples)
        chunk = self.chunk or flat.shape[0]
        costs = []
        for start in range(0, flat.shape[0], chunk):
            part = slice(start, start + chunk)
            final = self.model.rollout(z_hist[part], flat[part], past[part])[:, -1]  # (chunk, N, D)
            costs.append((final - goal[part]).pow(2).sum(dim=(-2, -1)))
        return rearrange(torch.cat(costs), "(k s) -> k s", k=episodes)


def make_optimizer(name: str, samples: int, iterations: int, elites: int, init_std: float, temperature: float):
    """The planner a sweep names; every model in a comparison gets the same one."""
    if name == "cem":
        return CEM(samples=samples, iterations=iterations, elites=elites, init_std=init_std)
    if name == "mppi":
        return MPPI(samples=samples, iterations=iterations, init_std=init_std, temperature=temperature)
    raise ValueError(f"planner {name!r} is unknown; known planners: cem, mppi")


def warm_start(previous: Tensor | None, executed: int, horizon: int, shape: tuple[int, int]) -> Tensor:
    """The previous plan's unexecuted tail, padded with zeros to ``horizon`` blocks: (K, H, A)."""
    episodes, width = shape
    mean = torch.zeros(episodes, horizon, width)
    if previous is not None and executed < previous.shape[1]:
        tail = previous[:, executed:]
        mean[:, : tail.shape[1]] = tail
    return mean
