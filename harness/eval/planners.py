"""Latent planning: CEM and MPPI over action-block sequences, batched over episodes.

The optimisers see only a cost function of candidate plans, so the same CEM plans
in a world model's latent space (:class:`LatentCost`) and in the true simulator
for the oracle. Shapes: K episodes planned together, S samples, H horizon blocks,
A action-block width.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from harness.eval.precision import PRECISIONS, autocast_for
from models.world_model import RolloutStart, WorldModel

CostFn = Callable[[Tensor], Tensor]
"""candidates (K, S, H, A) -> cost (K, S); lower is better. Unbounded, as published: the env clips at execution."""
RolloutFn = Callable[[RolloutStart, Tensor], Tensor]
"""(start, plans (B, H, A)) -> imagined latents (B, H, N, D): a model's ``rollout_from``, or its compiled copy."""


@dataclass(frozen=True)
class PlannerConfig:
    """The one shape of planner settings: a sweep's ``planner:`` block, the optimisers' and controllers' input.

    Defaults are LeWM's (REFERENCE.md, "Planning and evaluation protocol").
    """

    name: str = "cem"  # a key of PLANNERS
    samples: int = 300  # LeWM: 300
    iterations: int = 30  # LeWM released config: 30 (paper: 10 outside Push-T)
    elites: int = 30  # LeWM: 30 (CEM only)
    horizon: int = 5  # action blocks planned (LeWM: 5)
    receding: int = 5  # blocks executed before replanning (LeWM: 5, the whole plan)
    init_std: float = 1.0  # LeWM: initial variance 1
    temperature: float = 0.1  # MPPI only
    chunk: int | None = None  # max candidates per model call (bounded memory); None = all at once
    batch_episodes: int = 50  # episodes planned together in one batched call (1 = the published per-plan timing)
    precision: str = "fp32"  # ours: "bf16" rolls out under bf16 autocast where the device has bf16 units; cost in fp32
    compile: bool = False  # ours: torch.compile the model's rollout, once per trial (pays back over many plans)

    def __post_init__(self) -> None:
        problems = []  # every bad field, one line each: the sweep loader reports them all at once
        if self.name not in PLANNERS:
            problems.append(f"planner.name {self.name!r} is unknown; known planners: {', '.join(PLANNERS)}")
        for name in ("samples", "iterations", "elites", "horizon", "receding", "batch_episodes"):
            if getattr(self, name) < 1:
                problems.append(f"planner.{name} must be at least 1, got {getattr(self, name)}")
        if self.name == "cem" and 1 <= self.samples < self.elites:  # a planner.samples below 1 is named above
            problems.append(f"planner.elites must lie in [1, planner.samples={self.samples}], got {self.elites}")
        if 1 <= self.horizon < self.receding:
            problems.append(f"planner.receding {self.receding} exceeds planner.horizon {self.horizon}")
        for name in ("init_std", "temperature"):
            if not 0 < getattr(self, name) < math.inf:
                problems.append(f"planner.{name} must be positive and finite, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            problems.append(f"planner.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.chunk is not None and self.chunk < 1:
            problems.append(f"planner.chunk must be at least 1 (or null for all at once), got {self.chunk}")
        if problems:
            raise ValueError("\n".join(problems))


class SamplingPlanner:
    """Refine a Gaussian over plans by sampling: each iteration samples, scores, then refits (:meth:`refit`)."""

    def __init__(self, config: PlannerConfig) -> None:
        self.config = config

    def optimize(self, cost_fn: CostFn, mean: Tensor, generator: torch.Generator) -> Tensor:
        """Refine plans ``mean`` (K, H, A); the first sample of every iteration is the mean itself."""
        std = torch.full_like(mean, self.config.init_std)
        for _ in range(self.config.iterations):
            candidates = _sample(mean, std, self.config.samples, generator)  # (K, S, H, A)
            mean, std = self.refit(candidates, cost_fn(candidates), std)  # cost (K, S)
        return mean

    def refit(self, candidates: Tensor, cost: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        """The next (mean, std), each (K, H, A), from scored candidates (K, S, H, A)."""
        raise NotImplementedError


class CEM(SamplingPlanner):
    """Cross-entropy method: refit the Gaussian to the elites, the lowest-cost samples."""

    def refit(self, candidates: Tensor, cost: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        elite_idx = cost.topk(self.config.elites, dim=1, largest=False).indices  # (K, E)
        elites = torch.gather(candidates, 1, elite_idx[..., None, None].expand(-1, -1, *candidates.shape[2:]))
        return elites.mean(dim=1), elites.std(dim=1)


class MPPI(SamplingPlanner):
    """Model-predictive path integral: the mean moves to a cost-weighted average of the samples; std stays."""

    def refit(self, candidates: Tensor, cost: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        normalised = (cost - cost.min(dim=1, keepdim=True).values) / (cost.std(dim=1, keepdim=True) + 1e-8)
        weights = torch.softmax(-normalised / self.config.temperature, dim=1)  # (K, S)
        return torch.einsum("ks,ksha->kha", weights, candidates), std


Planner = CEM | MPPI
PLANNERS: dict[str, type[Planner]] = {"cem": CEM, "mppi": MPPI}


def make_planner(config: PlannerConfig) -> Planner:
    """The optimiser a sweep names; every model in a comparison gets the same one."""
    return PLANNERS[config.name](config)


def _sample(mean: Tensor, std: Tensor, samples: int, generator: torch.Generator) -> Tensor:
    noise = torch.randn((mean.shape[0], samples, *mean.shape[1:]), generator=generator, device=mean.device)
    candidates = mean[:, None] + std[:, None] * noise  # (K, S, H, A)
    candidates[:, 0] = mean
    return candidates  # no clamp inside the solver, as the authors': the env clips what is executed


class LatentCost:
    """Terminal squared latent error ‖ẑ_H − z_goal‖² summed over tokens and dims (LeWM's cost).

    Built once per replanning call from latents encoded once (the history per plan, the goal per
    episode). What stays fixed within the plan is made here, once: the model's
    :class:`~models.world_model.RolloutStart` (for LeWM, the past actions' embeddings). Each call
    (one per CEM iteration) then only rolls out its candidates, in chunks of at most ``chunk``
    (bounded memory, identical result). With ``precision="bf16"`` the rollout runs under bf16
    autocast and the squared error is reduced in fp32; ``rollout`` is the model's
    ``rollout_from`` unless a compiled copy is given.
    """

    def __init__(
        self,
        model: WorldModel,
        z_hist: Tensor,
        past_actions: Tensor,
        z_goal: Tensor,
        chunk: int | None = None,
        precision: str = "fp32",
        rollout: RolloutFn | None = None,
    ) -> None:
        self.z_goal, self.chunk, self.precision = z_goal.float(), chunk, precision  # goal (K, N, D)
        self.rollout = rollout or model.rollout_from
        with autocast_for(z_hist.device, precision):
            self.start = model.start_rollout(z_hist, past_actions)  # once per plan

    def __call__(self, candidates: Tensor) -> Tensor:
        episodes, samples = candidates.shape[:2]
        flat = rearrange(candidates, "k s h a -> (k s) h a")
        episode_of = torch.arange(episodes, device=flat.device).repeat_interleave(samples)  # (K·S,): row -> episode
        chunk = self.chunk or flat.shape[0]
        costs = []
        for begin in range(0, flat.shape[0], chunk):
            rows = episode_of[begin : begin + chunk]  # each candidate's episode
            with autocast_for(flat.device, self.precision):
                imagined = self.rollout(self.start.rows(rows), flat[begin : begin + chunk])  # (chunk, H, N, D)
            final = imagined[:, -1].float()  # (chunk, N, D)
            costs.append((final - self.z_goal[rows]).pow(2).sum(dim=(-2, -1)))
        return rearrange(torch.cat(costs), "(k s) -> k s", k=episodes)


def warm_start(previous: Tensor | None, executed: int, horizon: int, shape: tuple[int, int]) -> Tensor:
    """The previous plan's unexecuted tail, padded with zeros to ``horizon`` blocks: (K, H, A)."""
    episodes, width = shape
    mean = torch.zeros(episodes, horizon, width)
    if previous is not None and executed < previous.shape[1]:
        tail = previous[:, executed:]
        mean[:, : tail.shape[1]] = tail
    return mean
