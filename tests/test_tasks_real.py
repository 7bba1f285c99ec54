"""Push-T, OGBench-Cube and Reacher on their real packages: the task contract, exact placement, cached data.

Cube renders a few frames/s on software Mesa, so its default tests step only a handful
of frames; expert success rates and parallel collection are marked slow.
"""

import gymnasium as gym
import numpy as np
import pytest

import tasks.data as data
from tasks.base import make_task
from tasks.collect import main as collect_main
from tasks.data import collect

# name -> (options, frame size, action dim, state dim)
TASK_SHAPES = {
    "pusht": ({}, 96, 2, 5),
    "cube": ({}, 64, 5, 61),
    "reacher": ({}, 64, 2, 6),
}
STEPS = {"pusht": 8, "cube": 2, "reacher": 8}  # raw steps the default tests take (Cube: ~4 frames/s)


@pytest.fixture(scope="module", params=sorted(TASK_SHAPES))
def task_and_env(request):
    name = request.param
    task = make_task(name, **TASK_SHAPES[name][0])
    env = task.make_env()
    yield task, env
    env.close()


def test_env_observations_and_actions_follow_the_task_contract(task_and_env):
    task, env = task_and_env
    _, size, action_dim, state_dim = TASK_SHAPES[task.name]
    assert (task.action_dim, task.state_dim, task.default_history, task.default_frameskip) == (
        action_dim,
        state_dim,
        3,
        5,
    )
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"pixels", "state"}
    assert obs["pixels"].shape == (size, size, 3) and obs["pixels"].dtype == np.uint8
    assert obs["state"].shape == (state_dim,) and obs["state"].dtype == np.float32
    assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (action_dim,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    assert env.observation_space.contains(obs)
    rng = np.random.default_rng(0)
    for _ in range(STEPS[task.name]):
        obs, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, action_dim).astype(np.float32))
        assert not terminated and not truncated
    assert env.observation_space.contains(obs)
    assert np.array_equal(env.render(), obs["pixels"])
    assert obs["pixels"].std() > 5  # a real scene, not a blank frame


def test_reset_is_reproducible_from_its_seed(task_and_env):
    task, env = task_and_env
    first = env.reset(seed=5)[0]
    second = env.reset(seed=5)[0]
    other = env.reset(seed=6)[0]
    assert np.array_equal(first["state"], second["state"]) and np.array_equal(first["pixels"], second["pixels"])
    assert not np.array_equal(first["state"], other["state"])


def test_set_state_places_the_world_exactly_and_renders_it_as_recorded(task_and_env):
    task, env = task_and_env
    obs, _ = env.reset(seed=1)
    policy = task.expert(np.random.default_rng(1), noise=0.1)
    for _ in range(STEPS[task.name]):
        obs, *_ = env.step(policy(obs))
    recorded = obs
    env.reset(seed=2)  # somewhere else entirely
    placed = env.set_state(recorded["state"])
    np.testing.assert_allclose(placed["state"], recorded["state"], atol=1e-4)
    np.testing.assert_allclose(env.get_state(), recorded["state"], atol=1e-4)
    difference = np.abs(placed["pixels"].astype(int) - recorded["pixels"].astype(int))
    assert difference.mean() < 0.5  # the same frame, up to float32 rounding of the state


def test_placing_a_recorded_state_replays_the_recorded_step(task_and_env):
    task, env = task_and_env
    if task.name == "pusht":
        pytest.skip("Push-T's state has no velocities: set_state places the pusher at rest")
    obs, _ = env.reset(seed=4)
    policy = task.expert(np.random.default_rng(4), noise=0.1)
    before, action = obs["state"], policy(obs)
    after = env.step(action)[0]["state"]
    env.reset(seed=5)
    env.set_state(before)
    # to the contact solver's tolerance (its warm start differs): velocities of a resting cube within ~1e-3
    np.testing.assert_allclose(env.step(action)[0]["state"], after, atol=2e-3)


def test_a_state_meets_its_own_goal_and_not_a_distant_one(task_and_env):
    task, env = task_and_env
    start, goal = task.sample_eval_case(np.random.default_rng(3))
    assert start.shape == goal.shape == (task.state_dim,)
    assert task.success(goal, goal) and task.distance(goal, goal) == pytest.approx(0.0, abs=1e-6)
    far = start if not task.success(start, goal) else task.sample_eval_case(np.random.default_rng(4))[0]
    assert not task.success(far, goal) and task.distance(far, goal) > 0
    # the goal can be placed and rendered: that is how image goals are made
    placed = env.set_state(goal)
    assert task.success(placed["state"], goal)


def test_evaluation_cases_are_reproducible_from_the_generator(task_and_env):
    task, _ = task_and_env
    first = task.sample_eval_case(np.random.default_rng(11))
    second = task.sample_eval_case(np.random.default_rng(11))
    other = task.sample_eval_case(np.random.default_rng(12))
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("name", sorted(TASK_SHAPES))
def test_collect_writes_the_cache_and_a_second_call_reads_it(name, tmp_path, monkeypatch):
    task = make_task(name, **TASK_SHAPES[name][0])
    steps = STEPS[name]
    recipe = {"policy": "expert", "episodes": 2, "steps": steps, "seed": 3, "noise": 0.1, "progress": False}
    episodes = collect(task, cache_dir=tmp_path, workers=1, **recipe)
    _, size, action_dim, state_dim = TASK_SHAPES[name]
    assert episodes.pixels.shape == (2, steps + 1, size, size, 3) and episodes.pixels.dtype == np.uint8
    assert episodes.actions.shape == (2, steps, action_dim) and np.abs(episodes.actions).max() <= 1
    assert episodes.states.shape == (2, steps + 1, state_dim) and episodes.states.dtype == np.float32
    assert not np.array_equal(episodes.states[0, 0], episodes.states[1, 0])  # each episode its own start

    def no_work(*args, **kwargs):
        raise AssertionError("a cached dataset was collected again")

    monkeypatch.setattr(data, "collect_shard", no_work)
    again = collect(task, cache_dir=tmp_path, workers=1, **recipe)
    assert again.key == episodes.key and np.array_equal(again.pixels, episodes.pixels)


def test_pusht_success_is_the_packages_coverage_test():
    from gym_pusht.envs.pusht import PushTEnv as PackagePushTEnv

    from tasks.pusht import GOAL_POSE, coverage

    package = PackagePushTEnv(obs_type="state")
    package.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        state, *_, info = package.step(rng.uniform(100, 400, 2))
        assert coverage(state[2:5], GOAL_POSE) == pytest.approx(info["coverage"], abs=1e-9)
    task = make_task("pusht")
    goal = np.array([256, 400, *GOAL_POSE], dtype=np.float32)
    nudged = goal.copy()
    nudged[2] += 1.0  # 1 px: still covered
    shifted = goal.copy()
    shifted[2] += 10.0  # 10 px: coverage ~0.9, not a success
    assert task.success(nudged, goal) and not task.success(shifted, goal)
    assert task.distance(shifted, goal) == pytest.approx(10.0)


def test_pusht_actions_span_the_packages_board():
    from tasks.pusht import action_to_target, target_to_action

    np.testing.assert_allclose(action_to_target(np.array([-1.0, 1.0])), [0.0, 512.0])
    np.testing.assert_allclose(target_to_action(np.array([256.0, 128.0])), [0.0, -0.5])


def test_reacher_goal_rests_the_fingertip_on_the_target():
    from tasks.reacher import fingertip

    task = make_task("reacher")
    _, goal = task.sample_eval_case(np.random.default_rng(0))
    np.testing.assert_allclose(fingertip(goal), goal[4:6], atol=1e-6)
    env = task.make_env()
    env.set_state(goal)
    np.testing.assert_allclose(env.physics.named.data.geom_xpos["finger", :2], goal[4:6], atol=1e-5)
    env.close()


def test_cube_compiles_its_scene_with_the_requested_shadow_map():
    from tasks.cube import package_env

    env = package_env(64, 512, ob_type="states")  # states: compiles the scene without rendering
    env.reset(seed=0)
    assert env.model.vis.quality.shadowsize == 512
    assert make_task("cube").config()["shadow_size"] == 1024  # keys the cache: frames depend on it


def test_collect_cli_rejects_an_unknown_task_in_one_line(capsys):
    assert collect_main(["pushy", "--episodes", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "pushy" in error and all(name in error for name in ("cube", "pusht", "reacher", "two_room"))


def test_collect_cli_fills_the_cache_and_reports_the_dataset(tmp_path, capsys):
    argv = ["reacher", "--episodes", "2", "--steps", "4", "--policy", "random", "--workers", "1"]
    assert collect_main([*argv, "--cache-dir", str(tmp_path), "--quiet"]) == 0
    report = capsys.readouterr().out
    key = next(line.split()[1] for line in report.splitlines() if line.startswith("dataset"))
    assert (tmp_path / "datasets" / key / "manifest.json").exists()
    assert "frames/s" in report and "collected now" in report
    assert collect_main([*argv, "--cache-dir", str(tmp_path), "--quiet"]) == 0
    assert "read from the cache" in capsys.readouterr().out


# --- heavier checks: run with `pytest -m slow tests/test_tasks_real.py` ---------------------------------


def expert_success_rate(name: str, noise: float, episodes: int) -> float:
    task = make_task(name)
    result = collect(task, "expert", episodes=episodes, seed=0, noise=noise, cache_dir=None, workers=2, progress=False)
    return result.info["policy_success_rate"]


@pytest.mark.slow
def test_pusht_expert_covers_the_goal_without_noise_and_mostly_with_a_little(cache_dir):
    assert expert_success_rate("pusht", 0.0, 10) >= 0.8  # measured 20/20
    assert expert_success_rate("pusht", 0.05, 10) >= 0.5  # measured 17/20 (at noise 0.1: 1/40)


@pytest.mark.slow
def test_reacher_expert_touches_the_target(cache_dir):
    assert expert_success_rate("reacher", 0.1, 10) >= 0.8


@pytest.mark.slow
def test_cube_oracle_places_the_cube_within_4_cm():
    """The oracle on the package's physics alone (no rendering, so 200-step episodes take seconds)."""
    from tasks.cube import CubeExpert, package_env, read_state

    task = make_task("cube")
    env = package_env(64, 1024, ob_type="states")
    successes = 0
    for episode in range(5):
        env.reset(seed=episode)
        expert, state = CubeExpert(np.random.default_rng(episode), noise=0.1), read_state(env)
        reached = False
        for _ in range(200):
            env.step(expert({"state": state}))
            state = read_state(env)
            reached = reached or task.success(state, expert.goal)
        successes += reached
    assert successes >= 4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pusht", "reacher", "cube"])
def test_parallel_collection_gives_the_same_bytes_as_one_process(name, tmp_path):
    task = make_task(name)
    recipe = {"policy": "expert", "episodes": 4, "steps": 6, "seed": 1, "noise": 0.1, "progress": False}
    data.SHARD_EPISODES, saved = 2, data.SHARD_EPISODES
    try:
        one = collect(task, cache_dir=tmp_path / "one", workers=1, **recipe)
        two = collect(task, cache_dir=tmp_path / "two", workers=2, **recipe)
    finally:
        data.SHARD_EPISODES = saved
    assert one.key == two.key
    for field in ("pixels", "actions", "states"):
        assert np.array_equal(getattr(one, field), getattr(two, field)), field
