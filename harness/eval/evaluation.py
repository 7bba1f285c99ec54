"""Goal-conditioned evaluation: run controllers on seeded cases under a condition.

The evaluator is the only code that reads true state: it places each env at the
case's start, renders the goal, steps the env with the controller's actions and
judges success. Controllers receive a redacted case (``Case.view``), pixels and the
actions they sent, with ``begin`` and every ``plan`` inside ``planning_guard``; only a
reference controller that declares ``reads_state`` (the oracle) gets the full cases and
the true state — never the env itself.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from harness.eval.cases import Case
from harness.eval.controllers import Controller, Observation
from harness.eval.protocol import EvalProtocol
from harness.report.stats import wilson_interval
from tasks.base import StateLeakError, Task, planning_guard
from tasks.conditions import Condition


@dataclass
class EpisodeResult:
    case: Case
    success: bool
    final_distance: float
    steps: int  # raw steps until first success (or the budget)
    plan_ms: list[float]  # wall-clock of every replanning call of the batch this episode was planned in


@dataclass(frozen=True)
class EvaluationProgress:
    """How far :func:`run_episodes` is: episodes finished, and the steps taken by the batch now running."""

    cases_done: int
    cases: int
    batch_cases: int  # episodes in the batch now running (0 once every case is done)
    batch_step: int  # raw env steps that batch has taken, of ``budget``
    budget: int

    @property
    def fraction(self) -> float:
        """Of the condition's episode-steps, how much is done."""
        running = self.batch_cases * min(self.batch_step, self.budget) / max(self.budget, 1)
        return (self.cases_done + running) / max(self.cases, 1)


def run_episodes(
    controller: Controller,
    task: Task,
    cases: list[Case],
    protocol: EvalProtocol,
    condition: Condition,
    batch_size: int | None = None,
    on_progress: Callable[[EvaluationProgress], None] | None = None,
) -> list[EpisodeResult]:
    """Run every case under ``condition``, ``batch_size`` episodes (default: the planner's) planned together.

    ``on_progress``, when given, is called after every replanning step and once every case is done.
    """
    if controller.reads_state and controller.role == "model":
        raise StateLeakError(
            f"controller {controller.name!r} declares reads_state, which only reference controllers "
            f"(role 'floor' or 'ceiling') may; a model plans from pixels"
        )
    batch_size = batch_size or controller.planner.batch_episodes
    results: list[EpisodeResult] = []
    for first in range(0, len(cases), batch_size):
        batch = cases[first : first + batch_size]

        def stepped(steps: int, done: int = len(results), running: int = len(batch)) -> None:
            if on_progress is not None:
                on_progress(EvaluationProgress(done, len(cases), running, steps, protocol.budget))

        results += _run_batch(controller, task, batch, protocol, condition, stepped)
    if on_progress is not None:
        on_progress(EvaluationProgress(len(results), len(cases), 0, 0, protocol.budget))
    return results


def _run_batch(
    controller: Controller,
    task: Task,
    cases: list[Case],
    protocol: EvalProtocol,
    condition: Condition,
    stepped: Callable[[int], None] = lambda steps: None,
) -> list[EpisodeResult]:
    """One batch of episodes planned together; ``stepped(steps)`` after each replanning step."""
    frameskip, budget, receding = protocol.frameskip, protocol.budget, controller.planner.receding
    envs = [task.make_env(seed=case.case_seed) for case in cases]
    try:
        for env in envs:
            env.reset(seed=0)
        # Each env renders the case's factors of variation (drawn from its seed) and, where it has a movable
        # camera, the camera move; what is left of the condition is applied to the frames.
        view = [condition.stage(task, env, case.case_seed) for env, case in zip(envs, cases, strict=True)][0]
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
        guard = nullcontext if controller.reads_state else planning_guard
        shown = cases if controller.reads_state else [case.view() for case in cases]  # what a robot would know
        with guard():
            controller.begin(shown, view.observe(goal_pixels))
        plan_ms: list[float] = []
        steps = 0
        while steps < budget:
            states = np.stack([env.get_state() for env in envs]) if controller.reads_state else None
            started = time.perf_counter()
            with guard():
                plan = controller.plan(Observation(view.observe(history), past_actions, steps, states)).numpy()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            plan_ms.append((time.perf_counter() - started) * 1e3)
            for block in np.clip(plan[:, :receding], -1.0, 1.0).transpose(1, 0, 2):  # (K, A): what is executed
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
            stepped(steps)
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


@dataclass(frozen=True)
class ConditionSummary:
    """Condition-level figures aggregated from episode results: the measured columns of a condition row."""

    episodes: int
    success_rate: float
    success_ci_low: float  # Wilson 95% interval
    success_ci_high: float
    final_distance: float
    plan_ms_median: float
    plan_ms_p95: float


def summarize_episodes(results: list[EpisodeResult]) -> ConditionSummary:
    """Success with its Wilson interval, mean final distance, and the replanning wall-clock quantiles."""
    successes = sum(r.success for r in results)
    interval = wilson_interval(successes, len(results))
    calls = {id(r.plan_ms): r.plan_ms for r in results}  # episodes planned together share one list
    plan_ms = [ms for batch in calls.values() for ms in batch] or [float("nan")]
    return ConditionSummary(
        episodes=len(results),
        success_rate=successes / len(results),
        success_ci_low=interval.low,
        success_ci_high=interval.high,
        final_distance=float(np.mean([r.final_distance for r in results])),
        plan_ms_median=float(np.median(plan_ms)),
        plan_ms_p95=float(np.percentile(plan_ms, 95)),
    )
