"""Goal-conditioned evaluation: run controllers on seeded cases under a condition.

The evaluator is the only code that reads true state: it places each env at the
case's start, renders the goal, steps the env with the controller's actions and
judges success. Controllers receive pixels, the actions they sent, and (oracle
only) the true state — never the env itself.
"""

from __future__ import annotations

import time
import zlib
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange

from harness.eval.cases import Case
from harness.eval.planners import LatentCost, warm_start
from harness.eval.protocol import Protocol
from harness.report.stats import wilson_interval
from models.world_model import WorldModel
from tasks.base import Task, planning_guard
from tasks.conditions import Condition


@dataclass
class Observation:
    """What a controller sees at a replanning step, for K episodes at once."""

    pixels: np.ndarray  # (K, h, H, W, 3) uint8: the last h frames, oldest first
    past_actions: np.ndarray  # (K, h-1, A) float32: the blocks executed between those frames
    steps_taken: int  # raw env steps since the start
    states: np.ndarray | None = None  # (K, S): only for controllers with reads_state


class Controller(ABC):
    """Turns observations into a plan of action blocks (K, H, A) in [-1, 1]."""

    name: str
    reads_state: bool = False  # only reference controllers (the oracle) may

    @abstractmethod
    def begin(self, cases: list[Case], goal_pixels: np.ndarray) -> None:
        """Start K episodes; goal_pixels (K, H, W, 3) is the rendered goal."""

    @abstractmethod
    def plan(self, observation: Observation) -> torch.Tensor:
        """A plan of action blocks (K, horizon, A)."""


def to_model_pixels(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1], as the models take them."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return rearrange(tensor, "... h w c -> ... c h w").float().div_(255.0)


class ModelController(Controller):
    """A world model planned by CEM/MPPI on the terminal latent distance to the goal."""

    def __init__(self, name: str, model: WorldModel, optimizer, horizon: int, receding: int, seed: int,
                 device: torch.device | str = "cpu", chunk: int | None = None) -> None:  # fmt: skip
        self.name, self.model, self.optimizer = name, model.eval(), optimizer
        self.horizon, self.receding, self.seed, self.device, self.chunk = horizon, receding, seed, device, chunk

    @torch.inference_mode()
    def begin(self, cases: list[Case], goal_pixels: np.ndarray) -> None:
        goal = to_model_pixels(goal_pixels[:, None], self.device)  # (K, 1, 3, H, W)
        self.z_goal = self.model.encode(goal)[:, -1]  # (K, N, D): encoded once per episode
        self.previous: torch.Tensor | None = None
        # One generator per episode batch, seeded by the cases: same seed, same plans.
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed + cases[0].case_seed % 2**31)

    @torch.inference_mode()
    def plan(self, observation: Observation) -> torch.Tensor:
        z_hist = self.model.encode(to_model_pixels(observation.pixels, self.device))  # (K, h, N, D)
        past = torch.from_numpy(observation.past_actions).to(self.device)
        cost = LatentCost(self.model, z_hist, past, self.z_goal, chunk=self.chunk)
        episodes, width = past.shape[0], past.shape[-1]
        mean = warm_start(self.previous, self.receding, self.horizon, (episodes, width)).to(self.device)
        self.previous = self.optimizer.optimize(cost, mean, self.generator)
        return self.previous.cpu()


class RandomController(Controller):
    """The floor: uniform random action blocks."""

    name = "random"

    def __init__(self, horizon: int, action_width: int, seed: int) -> None:
        self.horizon, self.action_width, self.seed = horizon, action_width, seed

    def begin(self, cases: list[Case], goal_pixels: np.ndarray) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + cases[0].case_seed % 2**31)

    def plan(self, observation: Observation) -> torch.Tensor:
        episodes = observation.pixels.shape[0]
        return torch.rand((episodes, self.horizon, self.action_width), generator=self.generator) * 2 - 1


class OracleController(Controller):
    """The ceiling: the same optimiser planning in the true simulator (``task.simulate``).

    Where a task has no batched simulator, it replays the recorded actions that led
    from the start to the goal in the source episode.
    """

    name = "oracle"
    reads_state = True

    def __init__(self, task: Task, optimizer, horizon: int, frameskip: int, seed: int) -> None:
        self.task, self.optimizer, self.horizon, self.frameskip, self.seed = task, optimizer, horizon, frameskip, seed
        self.simulated = type(task).simulate is not Task.simulate
        self.kind = "sim-" + type(optimizer).__name__.lower() if self.simulated else "replay"

    def begin(self, cases: list[Case], goal_pixels: np.ndarray) -> None:
        self.cases = cases
        self.goals = np.stack([case.goal for case in cases])
        self.generator = torch.Generator().manual_seed(self.seed + cases[0].case_seed % 2**31)

    def plan(self, observation: Observation) -> torch.Tensor:
        if not self.simulated:
            return self._replay(observation.steps_taken)
        states = observation.states
        mean = torch.zeros(states.shape[0], self.horizon, self.frameskip * self.task.action_dim)
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
        for case in self.cases:
            recorded = case.recorded_actions[steps_taken : steps_taken + self.horizon * self.frameskip]
            padded = np.zeros((self.horizon * self.frameskip, recorded.shape[-1]), dtype=np.float32)
            padded[: len(recorded)] = recorded
            plans.append(padded.reshape(self.horizon, -1))
        return torch.from_numpy(np.stack(plans))


@dataclass
class EpisodeResult:
    case: Case
    success: bool
    final_distance: float
    steps: int  # raw steps until first success (or the budget)
    plan_ms: list[float]  # wall-clock of every replanning call of the batch this episode was planned in


def run_episodes(
    controller: Controller,
    task: Task,
    cases: list[Case],
    protocol: Protocol,
    condition: Condition,
    receding: int,
    batch_size: int = 50,
) -> list[EpisodeResult]:
    """Run every case under ``condition``, ``batch_size`` episodes planned together."""
    results = []
    for first in range(0, len(cases), batch_size):
        results += _run_batch(controller, task, cases[first : first + batch_size], protocol, condition, receding)
    return results


def _run_batch(controller, task, cases, protocol, condition, receding) -> list[EpisodeResult]:
    frameskip, budget = protocol.frameskip, protocol.budget
    envs = [task.make_env(seed=case.case_seed) for case in cases]
    try:
        for env in envs:
            env.reset(seed=0)
        # A camera move is rendered by envs that have a movable camera; the rest is applied to frames.
        view = [condition.place_camera(env) for env in envs][0]
        goal_pixels = np.stack([env.set_state(case.goal)["pixels"] for env, case in zip(envs, cases, strict=True)])
        history = np.stack(
            [[env.set_state(s)["pixels"] for s in case.history_states] for env, case in zip(envs, cases, strict=True)]
        )  # (K, h, H, W, 3); each env is left at its start
        past_actions = np.stack([case.history_actions for case in cases]).astype(np.float32)
        # Noise is seeded by the case and the condition, never by the model: paired across models.
        channels = [
            condition.channel(np.random.default_rng([case.case_seed, zlib.crc32(condition.name.encode())]))
            for case in cases
        ]  # one actuator per episode: its noise stream and, for sticky actions, its last executed action
        reached = [bool(task.success(case.start, case.goal)) for case in cases]
        first_success = [0 if r else budget for r in reached]
        controller.begin(cases, view.observe(goal_pixels))
        plan_ms: list[float] = []
        steps = 0
        while steps < budget:
            states = np.stack([env.get_state() for env in envs]) if controller.reads_state else None
            started = time.perf_counter()
            with nullcontext() if controller.reads_state else planning_guard():
                plan = controller.plan(Observation(view.observe(history), past_actions, steps, states)).numpy()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            plan_ms.append((time.perf_counter() - started) * 1e3)
            for block in plan[:, :receding].transpose(1, 0, 2):  # (K, A) per executed block
                if steps >= budget:
                    break
                raw = block.reshape(len(envs), frameskip, -1)
                for substep in range(frameskip):
                    for k, env in enumerate(envs):
                        env.step(channels[k](raw[k, substep]))
                        if not reached[k] and task.success(env.get_state(), cases[k].goal):
                            reached[k], first_success[k] = True, steps + substep + 1
                steps += frameskip
                frames = np.stack([env.render_pixels() for env in envs])
                history = np.concatenate([history[:, 1:], frames[:, None]], axis=1)
                if past_actions.shape[1]:  # the h-1 blocks between the frames in the history
                    past_actions = np.concatenate([past_actions[:, 1:], block[:, None]], axis=1)
        finals = [env.get_state() for env in envs]
    finally:
        for env in envs:
            env.close()
    results = []
    for k, case in enumerate(cases):
        success = reached[k] if protocol.success == "ever" else bool(task.success(finals[k], case.goal))
        results.append(
            EpisodeResult(case, success, float(task.distance(finals[k], case.goal)), first_success[k], plan_ms)
        )
    return results


def summarize(results: list[EpisodeResult]) -> dict[str, float]:
    """Condition-level figures from episode results (success with its Wilson interval)."""
    successes = sum(r.success for r in results)
    interval = wilson_interval(successes, len(results))
    calls = {id(r.plan_ms): r.plan_ms for r in results}  # episodes planned together share one list
    plan_ms = [ms for batch in calls.values() for ms in batch] or [float("nan")]
    return {
        "episodes": len(results),
        "success_rate": successes / len(results),
        "success_ci_low": interval.low,
        "success_ci_high": interval.high,
        "final_distance": float(np.mean([r.final_distance for r in results])),
        "plan_ms_median": float(np.median(plan_ms)),
        "plan_ms_p95": float(np.percentile(plan_ms, 95)),
    }
