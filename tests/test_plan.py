"""Planners and evaluation: they reach goals given true dynamics, are deterministic, and never cheat."""

import dataclasses

import numpy as np
import pytest
import torch
from einops import rearrange

from harness.eval.cases import CaseView, make_cases
from harness.eval.controllers import ModelController, OracleController, RandomController
from harness.eval.evaluation import run_episodes, summarize_episodes
from harness.eval.planners import LatentCost, PlannerConfig
from harness.eval.protocol import EvalProtocol
from models.world_model import WorldModel
from tasks.base import StateLeakError, planning_guard
from tasks.conditions import Condition
from tasks.two_room import AGENT_RGB


class TrueDynamicsModel(WorldModel):
    """A test model whose latent is the agent's true position, read off the pixels, and whose
    rollout is an exact copy of the physics: a planner given it should plan like the oracle.

    The copy is the model's own (a geometry built with guarded=False): the task's geometry is
    its simulator, which raises when stepped during planning, as a real model never has it.
    """

    def __init__(self, task):
        super().__init__()
        self.task, self.history = task, 1
        self.physics = dataclasses.replace(task.geometry, guarded=False)
        self.units_per_pixel = task.geometry.world_size / task.image_size

    def encode(self, pixels):
        batch, time = pixels.shape[:2]
        target = torch.tensor(AGENT_RGB / 255.0, dtype=pixels.dtype).view(1, 1, 3, 1, 1)
        weight = (-((pixels - target) ** 2).sum(dim=2) * 50).exp()  # (B, T, H, W): soft agent mask
        rows = torch.arange(pixels.shape[-2], dtype=pixels.dtype) + 0.5
        cols = torch.arange(pixels.shape[-1], dtype=pixels.dtype) + 0.5
        total = weight.sum(dim=(-2, -1))
        x = (weight * cols).sum(dim=(-2, -1)) / total
        y = (weight * rows[:, None]).sum(dim=(-2, -1)) / total
        return torch.stack([x, y], dim=-1).view(batch, time, 1, 2) * self.units_per_pixel

    def predict(self, z_hist, actions):
        states = rearrange(z_hist, "b t n d -> (b t n) d").numpy()
        raw = rearrange(actions, "b t (f a) -> f (b t) a", a=2).numpy()
        for action in raw:
            states = self.physics.step(states, action)  # its own copy of the physics, not the task's
        return torch.from_numpy(states).view(z_hist.shape)

    def loss(self, batch):
        raise NotImplementedError("a test model with no parameters to train")

    @property
    def tokens_per_frame(self):
        return 1


CLEAN = Condition()


def run(controller, two_room_cases, condition=CLEAN):
    task, _, protocol, cases = two_room_cases
    return run_episodes(controller, task, cases, protocol, condition)


def cem(samples: int, iterations: int, elites: int) -> PlannerConfig:
    return PlannerConfig(name="cem", samples=samples, iterations=iterations, elites=elites)


def test_cem_on_true_dynamics_reaches_goals_and_beats_random(two_room_cases):
    task = two_room_cases[0]
    planned = summarize_episodes(
        run(ModelController("true", TrueDynamicsModel(task), cem(100, 5, 10), seed=0), two_room_cases)
    )
    floor = summarize_episodes(run(RandomController(task, PlannerConfig(), frameskip=5, seed=0), two_room_cases))
    assert planned.success_rate >= 0.75
    assert planned.success_rate > floor.success_rate
    assert planned.plan_ms_median > 0


def test_mppi_and_oracle_reach_goals(two_room_cases):
    task = two_room_cases[0]
    mppi_config = PlannerConfig(name="mppi", samples=100, iterations=5)
    mppi = summarize_episodes(
        run(ModelController("true", TrueDynamicsModel(task), mppi_config, seed=0), two_room_cases)
    )
    oracle = summarize_episodes(run(OracleController(task, cem(100, 5, 10), frameskip=5, seed=0), two_room_cases))
    assert mppi.success_rate >= 0.6
    assert oracle.success_rate >= 0.75


def test_planning_is_deterministic_for_a_fixed_seed(two_room_cases):
    task = two_room_cases[0]
    outcomes = []
    for _ in range(2):
        controller = ModelController("true", TrueDynamicsModel(task), cem(50, 3, 5), seed=3)
        results = run(controller, two_room_cases, Condition(action_noise=0.2))
        outcomes.append([(r.success, round(r.final_distance, 6)) for r in results])
    assert outcomes[0] == outcomes[1]


def test_the_planner_config_holds_the_receding_horizon_the_evaluator_executes(two_room_cases):
    task = two_room_cases[0]
    executed = []

    class Recorder(RandomController):
        def plan(self, observation):
            executed.append(observation.steps_taken)
            return super().plan(observation)

    run(Recorder(task, PlannerConfig(horizon=5, receding=2), frameskip=5, seed=0), two_room_cases)
    assert executed[:3] == [0, 10, 20]  # 2 blocks of 5 raw steps between replanning calls
    with pytest.raises(ValueError, match="receding"):
        PlannerConfig(horizon=3, receding=4)
    with pytest.raises(ValueError, match="elites"):
        PlannerConfig(samples=10, elites=20)


def test_chunked_cost_is_identical_to_unchunked(two_room_cases):
    task = two_room_cases[0]
    model = TrueDynamicsModel(task)
    z_hist, goal = torch.rand(3, 1, 1, 2) * 40 + 10, torch.rand(3, 1, 2) * 40 + 10
    past = torch.zeros(3, 0, 10)
    candidates = torch.rand(3, 20, 5, 10) * 2 - 1
    whole = LatentCost(model, z_hist, past, goal)(candidates)
    chunked = LatentCost(model, z_hist, past, goal, chunk=7)(candidates)
    assert torch.equal(whole, chunked)


def test_already_solved_starts_are_resampled_and_counted(two_room_cases):
    task, data = two_room_cases[:2]
    tiny_offset = EvalProtocol(goal_offset=5, episodes=20).resolved(1, 5)
    cases, resampled = make_cases(task, data, tiny_offset)
    assert resampled > 0 and not any(case.start_solved for case in cases)
    kept, none = make_cases(task, data, EvalProtocol(goal_offset=5, episodes=20, resample_solved=False).resolved(1, 5))
    assert none == 0 and any(case.start_solved for case in kept)
    assert [c.case_seed for c in cases] == [c.case_seed for c in kept]  # same seeds, only the redraws differ


def test_camera_shift_moves_the_view_and_action_noise_is_seeded():
    frame = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    frame[0, 2, 3] = 255
    shifted = Condition(camera_shift=2).observe(frame)
    assert shifted.shape == frame.shape and shifted[0, 4, 5].max() == 255 and shifted[0, 2, 3].max() == 0
    noisy = Condition(action_noise=0.5)
    a = noisy.execute(np.zeros(2), np.random.default_rng(1))
    b = noisy.execute(np.zeros(2), np.random.default_rng(1))
    assert np.array_equal(a, b) and np.abs(a).max() > 0
    assert np.array_equal(Condition().execute(np.full(2, 0.3), np.random.default_rng(0)), np.full(2, 0.3, np.float32))


class PeekingModel(TrueDynamicsModel):
    """A model that cheats: its rollout asks the simulator for success (the dino_wm #26 leak)."""

    def predict(self, z_hist, actions):
        self.task.success(np.zeros(2), np.zeros(2))
        return super().predict(z_hist, actions)


def test_a_planner_that_reads_true_state_raises(two_room_cases):
    task = two_room_cases[0]
    controller = ModelController("peek", PeekingModel(task), cem(8, 1, 2), seed=0)
    with pytest.raises(StateLeakError, match="success"):
        run(controller, two_room_cases)
    env = task.make_env(seed=0)
    with planning_guard(), pytest.raises(StateLeakError, match="get_state"):
        env.get_state()
    env.get_state()  # outside planning, the evaluator reads it freely


class SimulatorSteppingModel(TrueDynamicsModel):
    """A model that cheats: its rollout steps the task's own simulator instead of a copy."""

    def predict(self, z_hist, actions):
        self.task.geometry.step(np.full((1, 2), 10.0, np.float32), np.zeros((1, 2), np.float32))
        return super().predict(z_hist, actions)


def test_a_model_stepping_the_task_simulator_during_planning_raises(two_room_cases):
    task = two_room_cases[0]
    with pytest.raises(StateLeakError, match="TwoRoomGeometry.step"):
        run(ModelController("sim", SimulatorSteppingModel(task), cem(8, 1, 2), seed=0), two_room_cases)
    stepped = task.geometry.step(np.full((1, 2), 10.0, np.float32), np.ones((1, 2), np.float32))
    assert stepped.shape == (1, 2)  # outside planning the env and the oracle step it freely


class ReplayingController(RandomController):
    """A controller that cheats: it replays the source episode's recorded actions (100% in the audit)."""

    def begin(self, cases, goal_pixels):
        super().begin(cases, goal_pixels)
        self.recorded = np.stack([case.recorded_actions for case in cases])


class GoalStateController(RandomController):
    """A controller that cheats in begin(): it reads the true goal state."""

    def begin(self, cases, goal_pixels):
        super().begin(cases, goal_pixels)
        self.goals = np.stack([case.goal for case in cases])


class JudgingController(RandomController):
    """A controller that cheats in begin() without touching the case: it asks the task's success test."""

    def __init__(self, task, planner, frameskip, seed):
        super().__init__(task, planner, frameskip, seed)
        self.task = task

    def begin(self, cases, goal_pixels):
        super().begin(cases, goal_pixels)
        self.task.success(np.zeros(2), np.zeros(2))


@pytest.mark.parametrize(
    ("controller_class", "leak"),
    [(ReplayingController, "recorded_actions"), (GoalStateController, "goal"), (JudgingController, "success")],
)
def test_a_controller_reading_the_case_or_the_task_in_begin_raises(two_room_cases, controller_class, leak):
    task = two_room_cases[0]
    with pytest.raises(StateLeakError, match=leak):
        run(controller_class(task, PlannerConfig(), frameskip=5, seed=0), two_room_cases)


def test_controllers_see_only_the_index_and_seed_of_each_case(two_room_cases):
    task, _, _, cases = two_room_cases
    seen = []

    class Recorder(RandomController):
        def begin(self, cases, goal_pixels):
            seen.extend(cases)
            super().begin(cases, goal_pixels)

    run(Recorder(task, PlannerConfig(), frameskip=5, seed=0), two_room_cases)
    assert [(v.index, v.case_seed) for v in seen] == [(c.index, c.case_seed) for c in cases]
    assert all(type(v) is CaseView for v in seen)  # a fresh view, not the evaluator's Case
    with pytest.raises(StateLeakError, match="start"):
        _ = seen[0].start


def test_only_reference_controllers_may_read_state_and_the_oracle_replays_recorded_actions(two_room_cases):
    task = two_room_cases[0]

    class StateReadingModel(RandomController):
        role, reads_state = "model", True

    with pytest.raises(StateLeakError, match="reads_state"):
        run(StateReadingModel(task, PlannerConfig(), frameskip=5, seed=0), two_room_cases)
    oracle = OracleController(task, cem(8, 1, 2), frameskip=5, seed=0)
    oracle.simulated = False  # the replay mode of tasks without a batched simulator
    replayed = summarize_episodes(run(oracle, two_room_cases))
    assert replayed.success_rate == 1.0  # the recorded actions lead from each start to its goal
