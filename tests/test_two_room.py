"""Two-Room: walls block, the door lets through, frames draw the agent, the expert works."""

import numpy as np
import pytest

from tasks.base import make_task
from tasks.two_room import AGENT_RGB, TwoRoom


@pytest.fixture(scope="module")
def task() -> TwoRoom:
    return make_task("two_room")


def push(env, action: tuple[float, float], steps: int) -> np.ndarray:
    """Apply one action for ``steps`` steps; the states visited, (steps, 2)."""
    return np.stack([env.step(np.array(action, dtype=np.float32))[0]["state"] for _ in range(steps)])


def test_two_room_is_registered_with_its_published_defaults(task):
    assert isinstance(task, TwoRoom)
    assert (task.default_history, task.default_frameskip, task.action_dim, task.state_dim) == (1, 5, 2, 2)
    assert task.success_radius == pytest.approx(16 / 224 * 64)  # LeWM's 16 units at 224 px, in a 64-unit world
    assert task.config()["success_radius"] == pytest.approx(16 / 224 * 64)


def test_image_size_option_sets_the_frame_size():
    obs, _ = make_task("two_room", image_size=32).make_env().reset(seed=0)
    assert obs["pixels"].shape == (32, 32, 3)


def test_set_state_round_trips_and_draws_the_agent_there(task):
    env = task.make_env(seed=0)
    state = np.array([12.25, 47.5], dtype=np.float32)
    obs = env.set_state(state)
    assert np.array_equal(env.get_state(), state) and np.array_equal(obs["state"], state)
    pixel_under_agent = obs["pixels"][int(state[1]), int(state[0])]  # 1 unit = 1 px at 64 px; rows are y
    assert np.array_equal(pixel_under_agent, AGENT_RGB.astype(np.uint8))
    assert not np.array_equal(env.set_state(np.array([50.0, 10.0]))["pixels"], obs["pixels"])


def test_set_state_rejects_a_position_inside_the_wall(task):
    env = task.make_env(seed=0)
    with pytest.raises(ValueError, match="free space"):
        env.set_state(np.array([32.0, 5.0]))
    with pytest.raises(ValueError, match="free space"):
        env.set_state(np.array([-3.0, 20.0]))


def test_wall_blocks_motion_away_from_the_door(task):
    g = task.geometry
    env = task.make_env(seed=0)
    env.set_state(np.array([g.wall_left - 3, 8.0]))
    states = push(env, (1.0, 0.0), 10)
    assert np.all(states[:, 0] <= g.wall_left)
    assert states[-1, 0] == pytest.approx(g.wall_left)  # it reaches the wall's face and stops there
    env.set_state(np.array([g.wall_right + 3, 56.0]))
    assert np.all(push(env, (-1.0, 0.0), 10)[:, 0] >= g.wall_right)


def test_agent_passes_through_the_door(task):
    g = task.geometry
    env = task.make_env(seed=0)
    env.set_state(np.array([g.wall_left - 3, g.door_center]))
    states = push(env, (1.0, 0.0), 20)
    assert states[-1, 0] >= g.wall_right  # in the right room
    # and a disc inside the doorway slides along the door's jambs, never into the wall
    env.set_state(np.array([g.world_size / 2, g.door_center]))
    assert np.all(push(env, (0.0, 1.0), 10)[:, 1] <= g.door_high)


def test_no_move_enters_the_wall_or_leaves_the_world_even_at_high_speed():
    fast = make_task("two_room", max_speed=7.0)  # faster per step than the wall is thick
    g, rng = fast.geometry, np.random.default_rng(0)
    states = g.sample_free(rng, 4000)
    crossings = np.zeros(len(states), dtype=bool)
    for _ in range(40):
        next_states = fast.simulate(states, rng.uniform(-1, 1, states.shape))
        assert not g.in_wall(next_states).any() and g.in_bounds(next_states).all()
        crossings |= (states[:, 0] < g.world_size / 2) != (next_states[:, 0] < g.world_size / 2)
        # a side change happens only within the door's height
        changed = (states[:, 0] <= g.wall_left) & (next_states[:, 0] >= g.wall_right)
        assert np.all((states[changed, 1] >= g.door_low) & (states[changed, 1] <= g.door_high))
        states = next_states
    assert crossings.any()  # the door is used


def test_simulate_matches_env_step_exactly(task):
    rng = np.random.default_rng(1)
    starts = task.geometry.sample_free(rng, 8)
    actions = rng.uniform(-1.2, 1.2, (30, 8, 2)).astype(np.float32)  # out-of-range actions are clipped alike
    batched = [starts]
    for step_actions in actions:
        batched.append(task.simulate(batched[-1], step_actions))
    batched = np.stack(batched, axis=1)  # (8, 31, 2)
    assert batched.dtype == np.float32
    env = task.make_env(seed=0)
    for index, start in enumerate(starts):
        env.set_state(start)
        visited = [start] + [env.step(action)[0]["state"] for action in actions[:, index]]
        assert np.array_equal(np.stack(visited), batched[index])


def test_render_batch_matches_env_frames(task):
    env = task.make_env(seed=0)
    states = task.geometry.sample_free(np.random.default_rng(2), 5)
    frames = task.render(states)
    assert frames.shape == (5, 64, 64, 3) and frames.dtype == np.uint8
    for state, frame in zip(states, frames, strict=True):
        assert np.array_equal(env.set_state(state)["pixels"], frame)


def test_expert_reaches_its_goal_far_more_often_than_random(task):
    """Same seeded starts and goals; the random policy is scored against the expert's goal."""
    env = task.make_env()
    reached = {"expert": [], "random": []}
    for episode in range(24):
        for policy_name in reached:
            rng = np.random.default_rng(episode)
            obs, _ = env.reset(seed=int(rng.integers(2**31)))  # not `episode`: that would replay rng's stream
            expert = task.expert(rng, noise=0.1)
            expert(obs)  # draws the goal from this start
            act = expert if policy_name == "expert" else task.random_policy(rng)
            hit = False
            for _ in range(task.episode_steps):
                obs = env.step(act(obs))[0]
                hit = hit or task.success(obs["state"], expert.goal)
            reached[policy_name].append(hit)
    expert_rate, random_rate = np.mean(reached["expert"]), np.mean(reached["random"])
    assert expert_rate >= 0.9, f"expert success {expert_rate:.2f}"
    assert expert_rate - random_rate >= 0.5, f"expert {expert_rate:.2f} vs random {random_rate:.2f}"


def test_expert_goal_is_in_the_other_room_as_often_as_configured():
    task = make_task("two_room", expert_cross_probability=1.0)
    rng = np.random.default_rng(0)
    for start in task.geometry.sample_free(rng, 20):
        expert = task.expert(rng)
        expert({"state": start})
        assert (start[0] < 32) != (expert.goal[0] < 32)


def test_success_is_strictly_within_the_configured_radius_as_published():
    """stable-worldmodel's TwoRoom: ``dist < 16`` (px at 224), here ``success_radius`` world units."""
    task = make_task("two_room", success_radius=5.0)
    assert task.success_test == "published"
    goal = np.array([10.0, 10.0], dtype=np.float32)
    assert task.distance(np.array([13.0, 14.0]), goal) == pytest.approx(5.0)
    assert task.success(np.array([13.0, 13.99]), goal)
    assert not task.success(np.array([13.0, 14.0]), goal)  # exactly on the radius: not within it


def test_speed_is_a_recorded_option_and_the_published_speed_is_5_px_per_step_at_224_px():
    """The default stays 1 unit/step (the quickstart's figures); 10/7 units/step is the published env's speed."""
    assert make_task("two_room").config()["max_speed"] == 1.0
    published = make_task("two_room", max_speed=10 / 7)
    assert published.config()["max_speed"] == pytest.approx(10 / 7)
    start = np.array([[10.0, 40.0]], dtype=np.float32)
    step = published.simulate(start, np.array([[1.0, 0.0]], dtype=np.float32)) - start
    assert step[0, 0] * 224 / published.geometry.world_size == pytest.approx(5.0, abs=1e-4)  # px at 224 px


@pytest.mark.parametrize(
    ("option", "value"), [("door_width", 3.0), ("max_speed", 0.0), ("success_radius", -1.0), ("image_size", 4)]
)
def test_invalid_options_are_rejected_with_a_message_naming_them(option, value):
    with pytest.raises(ValueError, match=option):
        make_task("two_room", **{option: value})
