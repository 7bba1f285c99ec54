"""Latent planning: CEM and MPPI over action-block sequences, batched over episodes.

The optimisers see only a cost function of candidate plans, so the same CEM plans
in a world model's latent space (:class:`LatentCost`) and in the true simulator
for the oracle. Shapes: K episodes planned together, S samples, H horizon blocks,
A action-block width.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import Tensor

from harness.eval.precision import PRECISIONS, autocast_for
from models.world_model import RolloutStart, WorldModel

logger = logging.getLogger(__name__)

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
    cuda_graphs: bool = False  # ours: on CUDA, one CEM/MPPI iteration captured as a CUDA graph and replayed

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
        for name in ("compile", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"planner.{name} must be true or false, got {getattr(self, name)!r}")
        if self.chunk is not None and self.chunk < 1:
            problems.append(f"planner.chunk must be at least 1 (or null for all at once), got {self.chunk}")
        if problems:
            raise ValueError("\n".join(problems))


class SamplingPlanner:
    """Refine a Gaussian over plans by sampling: each iteration samples, scores, then refits (:meth:`refit`).

    With ``config.cuda_graphs`` and a :class:`LatentCost` (ModelController sets it only on CUDA),
    the iteration runs as a captured CUDA graph (:class:`GraphedIteration`), one per set of shapes.
    """

    def __init__(self, config: PlannerConfig) -> None:
        self.config = config
        self.graphs: dict[tuple, GraphedIteration] = {}  # by shapes; at most GRAPHS_KEPT, oldest dropped first

    def optimize(self, cost_fn: CostFn, mean: Tensor, generator: torch.Generator) -> Tensor:
        """Refine plans ``mean`` (K, H, A); the first sample of every iteration is the mean itself."""
        if self.config.cuda_graphs and isinstance(cost_fn, LatentCost):
            return self.graphed(cost_fn, mean).run(cost_fn, mean, generator)
        std = torch.full_like(mean, self.config.init_std)
        for _ in range(self.config.iterations):
            shape = (mean.shape[0], self.config.samples, *mean.shape[1:])  # (K, S, H, A)
            noise = torch.randn(shape, generator=generator, device=mean.device)
            mean, std = self.iterate(cost_fn, mean, std, noise)
        return mean

    def iterate(self, cost_fn: CostFn, mean: Tensor, std: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """One iteration: candidates from standard-normal ``noise`` (K, S, H, A), scored, refitted to (mean, std)."""
        candidates = mean[:, None] + std[:, None] * noise  # (K, S, H, A)
        candidates[:, 0] = mean  # no clamp inside the solver, as the authors': the env clips what is executed
        return self.refit(candidates, cost_fn(candidates), std)  # cost (K, S)

    def refit(self, candidates: Tensor, cost: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        """The next (mean, std), each (K, H, A), from scored candidates (K, S, H, A)."""
        raise NotImplementedError

    def graphed(self, cost: LatentCost, mean: Tensor) -> GraphedIteration:
        """The captured iteration for these shapes, captured now if they are new."""
        key = (tuple(mean.shape), mean.dtype, cost.shapes())
        if key not in self.graphs:
            if len(self.graphs) >= GRAPHS_KEPT:
                del self.graphs[next(iter(self.graphs))]  # its graph's memory pool goes with it
            self.graphs[key] = GraphedIteration(self, cost, mean)
        return self.graphs[key]


GRAPHS_KEPT = 4  # captured shapes per planner: a trial plans at one or two (a last, smaller batch of episodes)


class GraphedIteration:
    """One planner iteration captured as a CUDA graph for one set of shapes, replayed once per iteration.

    A graph replays its kernels on the memory it was captured with, so everything an iteration
    reads lives in tensors made here: the distribution (mean, std), the noise, and a copy of the
    cost's inputs (:meth:`LatentCost.static_copy`: the goal latents and the rollout start; the
    model's weights stay where they are). Each plan copies its own values in (:meth:`run`). The
    noise is drawn outside the graph, from the controller's own generator into the static buffer:
    the same draws in the same order as the ordinary loop, so the same plans for the same seed,
    and nothing random inside the graph (no graph-safe generator state to register).
    """

    def __init__(self, planner: SamplingPlanner, cost: LatentCost, mean: Tensor) -> None:
        self.planner, self.cost = planner, cost.static_copy()
        config = planner.config
        self.mean, self.std = mean.clone(), torch.full_like(mean, config.init_std)  # (K, H, A)
        self.noise = torch.zeros((mean.shape[0], config.samples, *mean.shape[1:]), device=mean.device)
        self.replay = capture_cuda_graph(self.step)

    def step(self) -> None:
        """One iteration on the static tensors, its result written back into them (what the graph holds)."""
        mean, std = self.planner.iterate(self.cost, self.mean, self.std, self.noise)
        self.mean.copy_(mean)
        self.std.copy_(std)

    def run(self, cost: LatentCost, mean: Tensor, generator: torch.Generator) -> Tensor:
        """The planner's ``optimize`` for ``cost`` from ``mean`` (K, H, A), by replaying the captured iteration."""
        self.cost.load(cost)
        self.mean.copy_(mean)
        self.std.fill_(self.planner.config.init_std)
        for _ in range(self.planner.config.iterations):
            torch.randn(self.noise.shape, generator=generator, out=self.noise)  # as the ordinary loop draws
            self.replay()
        return self.mean.clone()  # the static mean is overwritten by the next plan


def capture_cuda_graph(step: Callable[[], None], warmup: int = 3) -> Callable[[], None]:
    """``step`` captured as a CUDA graph; returns its replay.

    ``warmup`` runs first on a side stream, as PyTorch's CUDA-graph notes ask: lazy
    initialisation, cuBLAS workspaces, autotuning and any compilation happen there, not in
    the capture.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


@functools.cache
def _warn_no_cuda_graphs(device_type: str) -> None:
    logger.warning(
        "planner.cuda_graphs asked for on %s, which is not a CUDA device: planning without them", device_type
    )


def resolve_cuda_graphs(requested: bool, device: torch.device | str) -> bool:
    """Whether plans on ``device`` run through CUDA graphs: on CUDA as asked; elsewhere never (warned once)."""
    device_type = torch.device(device).type
    if requested and device_type != "cuda":
        _warn_no_cuda_graphs(device_type)
        return False
    return requested


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
        # (K·S,): each row's episode, by a broadcast and a reshape: nothing a CUDA-graph capture refuses
        episode_of = repeat(torch.arange(episodes, device=flat.device), "k -> (k s)", s=samples)
        chunk = self.chunk or flat.shape[0]
        costs = []
        for begin in range(0, flat.shape[0], chunk):
            rows = episode_of[begin : begin + chunk]  # each candidate's episode
            with autocast_for(flat.device, self.precision):
                imagined = self.rollout(self.start.rows(rows), flat[begin : begin + chunk])  # (chunk, H, N, D)
            final = imagined[:, -1].float()  # (chunk, N, D)
            costs.append((final - self.z_goal[rows]).pow(2).sum(dim=(-2, -1)))
        return rearrange(torch.cat(costs), "(k s) -> k s", k=episodes)

    def inputs(self) -> dict[str, Tensor]:
        """What a call reads besides its candidates and the model's weights: the goal latents and the rollout start."""
        start = {field.name: getattr(self.start, field.name) for field in dataclasses.fields(self.start)}
        return {"z_goal": self.z_goal} | {name: tensor for name, tensor in start.items() if tensor is not None}

    def shapes(self) -> tuple:
        """What a captured call depends on besides input values: their shapes and dtypes, chunk, precision, rollout."""
        inputs = tuple((name, tuple(tensor.shape), tensor.dtype) for name, tensor in self.inputs().items())
        return inputs, self.chunk, self.precision, self.rollout

    def static_copy(self) -> LatentCost:
        """This cost over its own copies of the inputs, to be captured in a CUDA graph and refilled by :meth:`load`."""
        static, inputs = copy.copy(self), {name: tensor.clone() for name, tensor in self.inputs().items()}
        static.z_goal = inputs.pop("z_goal")
        static.start = dataclasses.replace(self.start, **inputs)
        return static

    def load(self, other: LatentCost) -> None:
        """Copy ``other``'s inputs (of the same shapes) into this cost's, in place."""
        for mine, theirs in zip(self.inputs().values(), other.inputs().values(), strict=True):
            mine.copy_(theirs)


def warm_start(previous: Tensor | None, executed: int, horizon: int, shape: tuple[int, int]) -> Tensor:
    """The previous plan's unexecuted tail, padded with zeros to ``horizon`` blocks: (K, H, A)."""
    episodes, width = shape
    mean = torch.zeros(episodes, horizon, width)
    if previous is not None and executed < previous.shape[1]:
        tail = previous[:, executed:]
        mean[:, : tail.shape[1]] = tail
    return mean
