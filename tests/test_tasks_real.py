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


PUSHT_GOAL = np.array([256.0, 400.0, 256.0, 256.0, np.pi / 4])  # pusher at its start, block at the package's goal


def moved(goal: np.ndarray, **changes: float) -> np.ndarray:
    """``goal`` with offsets added by name: ax, ay, bx, by (px) or angle (rad) for Push-T."""
    index = {"ax": 0, "ay": 1, "bx": 2, "by": 3, "angle": 4}
    state = goal.copy()
    for name, change in changes.items():
        state[index[name]] += change
    return state


def test_pusht_published_success_is_20_px_on_pusher_and_block_jointly_and_pi_over_9():
    """stable-worldmodel's PushT.eval_state: ‖(agent xy, block xy) − goal's‖ < 20 and wrapped angle gap < π/9."""
    task, goal = make_task("pusht"), PUSHT_GOAL
    assert task.success_test == "published"
    assert task.success(moved(goal, ax=19.0), goal) and not task.success(moved(goal, ax=21.0), goal)
    assert task.success(moved(goal, by=-19.0), goal) and not task.success(moved(goal, by=-21.0), goal)
    assert not task.success(moved(goal, ax=15.0, bx=15.0), goal)  # 15 px each, 21.2 px jointly
    assert task.success(moved(goal, angle=np.pi / 9 - 1e-3), goal)
    assert not task.success(moved(goal, angle=np.pi / 9 + 1e-3), goal)
    wrapped = goal.copy()
    wrapped[4], goal_near_zero = 2 * np.pi - 0.1, moved(goal, angle=0.1 - np.pi / 4)  # 0.2 rad apart across 0
    assert task.success(wrapped, goal_near_zero)
    assert task.distance(moved(goal, ax=19.0), goal) == pytest.approx(0.95)  # in units of the tolerance
    assert task.distance(moved(goal, angle=np.pi / 18), goal) == pytest.approx(0.5)


def test_pusht_coverage_test_is_the_packages_and_stricter_than_the_published_one():
    from gym_pusht.envs.pusht import PushTEnv as PackagePushTEnv

    from tasks.pusht import GOAL_POSE, coverage

    package = PackagePushTEnv(obs_type="state")
    package.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        state, *_, info = package.step(rng.uniform(100, 400, 2))
        assert coverage(state[2:5], GOAL_POSE) == pytest.approx(info["coverage"], abs=1e-9)
    task, published, goal = make_task("pusht", success_test="coverage"), make_task("pusht"), PUSHT_GOAL
    nudged, shifted = moved(goal, bx=1.0), moved(goal, bx=10.0)  # 1 px: still covered; 10 px: coverage ~0.9
    assert task.success(nudged, goal) and not task.success(shifted, goal)
    assert task.distance(shifted, goal) == pytest.approx(10.0)
    assert published.success(shifted, goal) and published.success(moved(goal, angle=np.radians(5)), goal)
    assert not task.success(moved(goal, angle=np.radians(5)), goal)


def test_pusht_actions_are_relative_pusher_targets_by_default_as_published():
    """An action moves the package's target to the pusher's position + 100 px × action (absolute: over the board)."""
    from gym_pusht.envs.pusht import PushTEnv as PackagePushTEnv

    from tasks.pusht import action_to_target, target_to_relative_action

    start = np.array([200.0, 300.0, 320.0, 150.0, 0.0])  # pusher clear of the block; angle 0: placed alike
    action = np.array([0.5, -0.25], dtype=np.float32)
    for action_mode, target in (("relative", start[:2] + [50.0, -25.0]), ("absolute", action_to_target(action))):
        task = make_task("pusht", image_size=16, action_mode=action_mode)
        assert task.config()["action_mode"] == action_mode
        env, package = task.make_env(), PackagePushTEnv(obs_type="state")
        try:
            env.set_state(start)
            package.reset(options={"reset_to_state": start})  # the same placed world
            expected, *_ = package.step(target)
            np.testing.assert_allclose(env.step(action)[0]["state"][:2], expected[:2], atol=1e-3)
        finally:
            env.close()
    assert make_task("pusht").config()["action_mode"] == "relative" and make_task("pusht").version == "2"
    far = target_to_relative_action(np.array([500.0, 100.0]), np.array([200.0, 250.0]))  # 300 px right, 150 up
    np.testing.assert_allclose(far, [1.0, -0.5], atol=1e-6)  # brought within reach along its direction
    with pytest.raises(ValueError, match="action_mode"):
        make_task("pusht", action_mode="delta")


def test_pusht_absolute_actions_span_the_packages_board():
    from tasks.pusht import action_to_target, target_to_action

    np.testing.assert_allclose(action_to_target(np.array([-1.0, 1.0])), [0.0, 512.0])
    np.testing.assert_allclose(target_to_action(np.array([256.0, 128.0])), [0.0, -0.5])


def test_pusht_with_its_own_colours_draws_the_packages_frames_and_keeps_recoloured_bodies_across_resets():
    """Push-T's factors repaint the package's bodies after each of its resets and fill its board; at the
    package's colours the frames are the package's own, pixel for pixel."""
    from tasks.pusht import _package_env_class

    task = make_task("pusht")
    env, package = task.make_env(), _package_env_class()(obs_type="pixels_agent_pos")
    try:
        for seed in (0, 1):
            ours, theirs = env.env.reset(seed=seed)[0]["pixels"], package.reset(seed=seed)[0]["pixels"]
            assert np.array_equal(ours, theirs)
        state = env.get_state()
        clean = env.set_state(state)["pixels"]
        env.set_factors({"object_colour": np.array([1.0, 0.0, 0.0])})
        red = env.set_state(state)["pixels"]  # set_state resets the package, which rebuilds the block
        assert np.any(np.all(red == [255, 0, 0], axis=-1)) and not np.any(np.all(clean == [255, 0, 0], axis=-1))
    finally:
        env.close()
        package.close()


def test_reacher_published_success_is_every_joint_within_0_05_rad():
    """stable-worldmodel's reacher task qpos_match: every |Δqpos| < 0.05, velocities and target ignored."""
    task = make_task("reacher")
    goal = np.array([0.3, -0.4, 0.0, 0.0, 0.1, 0.1])
    assert task.success_test == "published"

    def off(shoulder: float = 0.0, wrist: float = 0.0) -> np.ndarray:
        return goal + np.array([shoulder, wrist, 5.0, -5.0, 0.0, 0.0])  # fast joints: velocities do not count

    assert task.success(off(wrist=0.049), goal) and not task.success(off(wrist=0.051), goal)
    assert task.success(off(shoulder=-0.049), goal) and not task.success(off(shoulder=-0.051), goal)
    assert task.success(off(0.049, 0.049), goal)  # per joint, not a norm (0.069 jointly)
    assert task.distance(off(0.02, -0.03), goal) == pytest.approx(0.03)  # the largest joint error, rad


def test_reacher_fingertip_test_is_looser_and_blind_to_the_elbow_side():
    from tasks.reacher import LINK_LENGTHS, fingertip, reach

    published, looser = make_task("reacher"), make_task("reacher", success_test="fingertip")
    goal = np.array([*reach(np.array([0.15, 0.05]), np.array([0.0, 1.0])), 0.0, 0.0, 0.15, 0.05])
    (l1, l2), (shoulder, wrist) = LINK_LENGTHS, goal[:2]
    mirrored = goal.copy()  # the other elbow side, the same fingertip
    mirrored[:2] = shoulder + 2 * np.arctan2(l2 * np.sin(wrist), l1 + l2 * np.cos(wrist)), -wrist
    np.testing.assert_allclose(fingertip(mirrored), fingertip(goal), atol=1e-9)
    assert looser.success(mirrored, goal) and not published.success(mirrored, goal)
    near = goal + np.array([0.15, 0.0, 0.0, 0.0, 0.0, 0.0])  # 0.15 rad at the shoulder: ~2.4 cm at the fingertip
    assert looser.success(near, goal) and not published.success(near, goal)
    assert looser.distance(near, goal) == pytest.approx(np.linalg.norm(fingertip(near) - fingertip(goal)))


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


def test_reacher_expert_goal_keeps_the_shoulders_turn_as_the_published_test_compares_unwrapped_angles():
    from tasks.reacher import fingertip, reach

    wound = np.array([3.5, 0.3])  # the free shoulder past π, as a few turns of a random policy leave it
    goal = reach(fingertip(np.array([3.6, 0.4, 0.0, 0.0, 0.0, 0.0])), wound)
    np.testing.assert_allclose(goal, [3.6, 0.4], atol=1e-6)  # not 3.6 − 2π: that would never pass qpos_match


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
def test_pusht_expert_reaches_the_goal_without_noise_and_mostly_with_a_little(cache_dir):
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
