"""Controllers: what turns observations into action plans — world models planned in latent space, and
the reference controllers that bound them (random, the floor; the oracle, the ceiling).

Reference controllers are registered in :data:`REFERENCE_CONTROLLERS` beside the zoo's
``models.registry.MODELS``: a sweep names either, and a reference controller's ``role``
("floor" or "ceiling") is written into every row, so the leaderboard never recognises
them by name.

A controller sees what a real robot would: a :class:`~harness.eval.cases.CaseView` per
episode (its index and seed), the goal image, and at each replanning step the history
frames and the actions it executed. The evaluator runs ``begin`` and ``plan`` inside
``planning_guard`` unless the controller declares ``reads_state`` (the oracle, by design),
and only such a controller is handed the full cases.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from einops import rearrange

from harness.eval.cases import Case, CaseView
from harness.eval.planners import LatentCost, PlannerConfig, RolloutFn, make_planner, resolve_cuda_graphs, warm_start
from harness.eval.precision import resolve_precision
from models.world_model import WorldModel
from tasks.base import Task
from tasks.scaler import ActionScaler


@dataclass
class Observation:
    """What a controller sees at a replanning step, for K episodes at once."""

    pixels: np.ndarray  # (K, h, H, W, 3) uint8: the last h frames, oldest first
    past_actions: np.ndarray  # (K, h-1, A) float32: the blocks executed between those frames
    steps_taken: int  # raw env steps since the start
    states: np.ndarray | None = None  # (K, S): only for controllers with reads_state


class Controller(ABC):
    """Turns observations into a plan of action blocks (K, H, A) in raw units; executes ``planner.receding`` of them.

    The env clips each executed action to the task's box [-1, 1].
    """

    name: str
    planner: PlannerConfig
    role: ClassVar[str] = "model"  # "model" | "floor" | "ceiling" (results.Role)
    reads_state: ClassVar[bool] = False  # only reference controllers (the oracle) may

    @abstractmethod
    def begin(self, cases: Sequence[CaseView], goal_pixels: np.ndarray) -> None:
        """Start K episodes; goal_pixels (K, H, W, 3) is the rendered goal. Full cases only with ``reads_state``."""

    @abstractmethod
    def plan(self, observation: Observation) -> torch.Tensor:
        """A plan of action blocks (K, horizon, A)."""

    def describe(self) -> str:
        """Which weights or simulator the controller plans with (the row's ``encoder`` column)."""
        return "none"


def to_model_pixels(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1], as the models take them."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return rearrange(tensor, "... h w c -> ... c h w").float().div_(255.0)


def _generator(seed: int, cases: Sequence[CaseView], device: torch.device | str = "cpu") -> torch.Generator:
    """One generator per episode batch, seeded by the trial and the cases: same seed, same plans."""
    return torch.Generator(device=device).manual_seed(seed + cases[0].case_seed % 2**31)


class ModelController(Controller):
    """A world model planned by CEM/MPPI on the terminal latent distance to the goal.

    It plans in the standardised action units the model was trained in (``scaler``, fitted
    on the training data; the identity plans in raw units), so CEM's std 1 is one dataset
    std; executed actions are standardised before they reach the model, plans are mapped
    back to raw units only when returned for execution.

    The goal is encoded once per episode (``begin``), the history once per replanning call
    (``plan``); the rollout runs in ``planner.precision`` where the device supports it
    (``precision`` says what ran) and, with ``planner.compile``, is compiled here, once per trial.
    With ``planner.cuda_graphs`` on a CUDA device, each CEM iteration replays a captured CUDA
    graph (``cuda_graphs`` says whether it does; elsewhere the ordinary loop runs, warned once).
    """

    def __init__(
        self,
        name: str,
        model: WorldModel,
        planner: PlannerConfig,
        seed: int,
        device: torch.device | str = "cpu",
        scaler: ActionScaler | None = None,
    ) -> None:
        self.name, self.model, self.planner, self.seed, self.device = name, model.eval(), planner, seed, device
        self.scaler = scaler
        self.precision = resolve_precision(planner.precision, device)  # "bf16" only where the device has bf16 units
        self.cuda_graphs = resolve_cuda_graphs(planner.cuda_graphs, device)  # only on CUDA
        self.optimizer = make_planner(dataclasses.replace(planner, cuda_graphs=self.cuda_graphs))
        self.rollout: RolloutFn = torch.compile(model.rollout_from) if planner.compile else model.rollout_from

    def describe(self) -> str:
        return self.model.describe().get("encoder", "")

    @torch.inference_mode()
    def begin(self, cases: Sequence[CaseView], goal_pixels: np.ndarray) -> None:
        goal = to_model_pixels(goal_pixels[:, None], self.device)  # (K, 1, 3, H, W)
        self.z_goal = self.model.encode(goal)[:, -1]  # (K, N, D): encoded once per episode
        self.previous: torch.Tensor | None = None
        self.generator = _generator(self.seed, cases, self.device)

    @torch.inference_mode()
    def plan(self, observation: Observation) -> torch.Tensor:
        z_hist = self.model.encode(to_model_pixels(observation.pixels, self.device))  # (K, h, N, D)
        past = self._standardised(torch.from_numpy(observation.past_actions).to(self.device))  # (K, h-1, A)
        cost = LatentCost(
            self.model, z_hist, past, self.z_goal, self.planner.chunk, precision=self.precision, rollout=self.rollout
        )
        episodes, width = past.shape[0], past.shape[-1]
        mean = warm_start(self.previous, self.planner.receding, self.planner.horizon, (episodes, width))
        self.previous = self.optimizer.optimize(cost, mean.to(self.device), self.generator)  # standardised units
        return self.previous.cpu() if self.scaler is None else self.scaler.inverse(self.previous).cpu()

    def _standardised(self, blocks: torch.Tensor) -> torch.Tensor:
        return blocks if self.scaler is None or not blocks.shape[-2] else self.scaler.transform(blocks)


class RandomController(Controller):
    """The floor: uniform random action blocks."""

    name = "random"
    role = "floor"

    def __init__(self, task: Task, planner: PlannerConfig, frameskip: int, seed: int) -> None:
        self.planner, self.action_width, self.seed = planner, frameskip * task.action_dim, seed

    def begin(self, cases: Sequence[CaseView], goal_pixels: np.ndarray) -> None:
        self.generator = _generator(self.seed, cases)

    def plan(self, observation: Observation) -> torch.Tensor:
        episodes = observation.pixels.shape[0]
        shape = (episodes, self.planner.horizon, self.action_width)
        return torch.rand(shape, generator=self.generator) * 2 - 1


class OracleController(Controller):
    """The ceiling: the same optimiser planning in the true simulator (``task.simulate``).

    Where a task has no batched simulator, it replays the recorded actions that led
    from the start to the goal in the source episode. It reads state by design, so the
    evaluator hands it the full cases and runs it outside the planning guard.
    """

    name = "oracle"
    role = "ceiling"
    reads_state = True

    def __init__(self, task: Task, planner: PlannerConfig, frameskip: int, seed: int) -> None:
        self.task, self.planner, self.frameskip, self.seed = task, planner, frameskip, seed
        self.optimizer = make_planner(planner)
        self.simulated = type(task).simulate is not Task.simulate

    def describe(self) -> str:
        return f"sim-{self.planner.name}" if self.simulated else "replay"

    def begin(self, cases: Sequence[CaseView], goal_pixels: np.ndarray) -> None:
        if not all(isinstance(case, Case) for case in cases):
            raise TypeError("the oracle reads the goal state and recorded actions: give it the full cases")
        self.cases: list[Case] = list(cases)
        self.goals = np.stack([case.goal for case in cases])
        self.generator = _generator(self.seed, cases)

    def plan(self, observation: Observation) -> torch.Tensor:
        if not self.simulated:
            return self._replay(observation.steps_taken)
        states = observation.states
        mean = torch.zeros(states.shape[0], self.planner.horizon, self.frameskip * self.task.action_dim)
        return self.optimizer.optimize(lambda c: self._simulated_cost(states, c), mean, self.generator)

    def _simulated_cost(self, states: np.ndarray, candidates: torch.Tensor) -> torch.Tensor:
        episodes, samples, horizon, _ = candidates.shape
        raw = rearrange(candidates.numpy(), "k s h (f a) -> (h f) (k s) a", f=self.frameskip)
        current = np.repeat(states, samples, axis=0)  # (K·S, S)
        for action in raw:
            current = self.task.simulate(current, action)
        goals = np.repeat(self.goals, samples, axis=0)
        cost = np.array([self.task.distance(s, g) for s, g in zip(current, goals, strict=True)])
        return torch.from_numpy(cost.reshape(episodes, samples)).float()

    def _replay(self, steps_taken: int) -> torch.Tensor:
        plans = []
        blocks = self.planner.horizon * self.frameskip
        for case in self.cases:
            recorded = case.recorded_actions[steps_taken : steps_taken + blocks]
            padded = np.zeros((blocks, recorded.shape[-1]), dtype=np.float32)
            padded[: len(recorded)] = recorded
            plans.append(padded.reshape(self.planner.horizon, -1))
        return torch.from_numpy(np.stack(plans))


# One line per reference controller: a sweep's models may name these beside the zoo's.
REFERENCE_CONTROLLERS: dict[str, type[RandomController | OracleController]] = {
    "random": RandomController,
    "oracle": OracleController,
}
CONTROLLER_ENTRY_POINTS = "wmbench.controllers"  # installed packages register "name = package.module:Class"


@functools.cache
def reference_controller(name: str) -> type[Controller] | None:
    """The controller class ``name`` names: a registered one, an import path ``package.module:Class`` or a
    ``wmbench.controllers`` entry point; None when ``name`` names no Controller (a world model, say).

    A controller from outside declares its ``role`` (``floor`` or ``ceiling``: it is measured beside the
    models, never ranked as one) and takes ``(task, planner, frameskip, seed)``, as the two here do.
    """
    if name in REFERENCE_CONTROLLERS:
        return REFERENCE_CONTROLLERS[name]
    registered = {point.name: point.value for point in importlib.metadata.entry_points(group=CONTROLLER_ENTRY_POINTS)}
    path = name if ":" in name else registered.get(name)
    if path is None:
        return None
    module_name, _, attribute = path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute, None)
    except ImportError:
        return None  # the model check names the import error
    if not (isinstance(found, type) and issubclass(found, Controller)):
        return None
    if found.role not in ("floor", "ceiling"):
        raise ValueError(f"controller {name!r} must declare role 'floor' or 'ceiling', got {found.role!r}")
    return found
