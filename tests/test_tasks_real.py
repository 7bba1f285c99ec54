"""Push-T, OGBench-Cube and Reacher on their real packages: published defaults, exact replay, package parity.

The contract every task honours (spaces, placement, the guard, cached data) is tested for
every registered task in test_task_contract.py. Cube renders a few frames/s on software
Mesa, so its default tests step only a handful of frames; expert success rates and
parallel collection are marked slow.
"""

import numpy as np
import pytest

import tasks.data as data
from tasks.base import TASKS, make_task
from tasks.collect import main as collect_main
from tasks.data import collect

# name -> (frame size, history, frameskip): the packages' own frames and LeWM's settings
PUBLISHED_DEFAULTS = {"pusht": (96, 3, 5), "cube": (64, 3, 5), "reacher": (64, 3, 5)}


@pytest.mark.parametrize("name", sorted(PUBLISHED_DEFAULTS))
def test_tasks_default_to_the_packages_frames_and_lewms_settings(name):
    task = make_task(name)
    assert (task.image_size, task.default_history, task.default_frameskip) == PUBLISHED_DEFAULTS[name]


@pytest.mark.parametrize("name", ["cube", "reacher"])  # Push-T's state has no velocities: it places at rest
def test_placing_a_recorded_state_replays_the_recorded_step(name):
    task = make_task(name, image_size=16)
    env = task.make_env()
    try:
        obs, _ = env.reset(seed=4)
        policy = task.expert(np.random.default_rng(4), noise=0.1)
        before, action = obs["state"], policy(obs)
        after = env.step(action)[0]["state"]
        env.reset(seed=5)
        env.set_state(before)
        # to the contact solver's tolerance (its warm start differs): velocities of a resting cube within ~1e-3
        np.testing.assert_allclose(env.step(action)[0]["state"], after, atol=2e-3)
    finally:
        env.close()


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


def test_reacher_expert_goal_rests_the_fingertip_on_the_target():
    from tasks.reacher import fingertip

    task = make_task("reacher", image_size=16)
    env = task.make_env()
    try:
        obs, _ = env.reset(seed=0)
        expert = task.expert(np.random.default_rng(0))
        expert(obs)  # builds the goal from this start
        goal = expert.goal
        np.testing.assert_allclose(fingertip(goal), goal[4:6], atol=1e-6)
        env.set_state(goal)
        np.testing.assert_allclose(env.physics.named.data.geom_xpos["finger", :2], goal[4:6], atol=1e-5)
    finally:
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
@pytest.mark.parametrize("name", sorted(TASKS))
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
