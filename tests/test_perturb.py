"""Evaluation conditions: each perturbation changes what it should, by the intended amount, and nothing else."""

import math

import numpy as np
import pytest

from tasks.conditions import AXES, Condition, degradation_conditions, rotate_zoom, translate
from tasks.two_room import AGENT_RGB, TwoRoom, TwoRoomEnv

TASK = TwoRoom(image_size=64)


def agent_centre(frames: np.ndarray) -> np.ndarray:
    """(row, col) centroid of the red agent's pixels in each frame (..., H, W, 3)."""
    red = (frames[..., 0] > 150) & (frames[..., 1] < 120)  # the agent is the only red thing in the world
    rows, cols = np.nonzero(red)
    return np.array([rows.mean(), cols.mean()])


def test_clean_condition_changes_nothing_and_is_named_clean():
    clean = Condition()
    frames = TASK.render(np.array([[10.0, 20.0], [50.0, 40.0]], dtype=np.float32))
    action = np.array([0.3, -0.7], dtype=np.float32)
    assert clean.name == "clean"
    assert np.array_equal(clean.observe(frames), frames)
    assert np.array_equal(clean.execute(action, np.random.default_rng(0)), action)
    assert not clean.moves_camera


def test_names_list_exactly_the_perturbed_fields():
    assert Condition(action_noise=0.2).name == "action_noise=0.2"
    assert Condition(camera_shift=4).name == "camera_shift=4"
    assert Condition(camera_zoom=1.0, camera_rotate=10, brightness=-0.3).name == "camera_rotate=10,brightness=-0.3"
    assert Condition(sticky_prob=0.25, hue=0.1).name == "sticky_prob=0.25,hue=0.1"
    assert len({c.name for c in degradation_conditions("camera_zoom", [1.0, 1.1, 1.25])}) == 3


def test_action_noise_has_the_requested_spread_around_the_action_and_reproduces_from_its_seed():
    condition = Condition(action_noise=0.2)
    rng = np.random.default_rng(1)
    executed = np.stack([condition.execute(np.zeros(2, np.float32), rng) for _ in range(4000)])
    assert abs(executed.mean()) < 0.01
    assert executed.std() == pytest.approx(0.2, rel=0.05)
    again = np.random.default_rng(1)
    assert np.array_equal(executed[:5], np.stack([condition.execute(np.zeros(2, np.float32), again) for _ in range(5)]))
    assert np.abs(Condition(action_noise=3.0).execute(np.ones(2, np.float32), rng)).max() <= 1.0  # clipped


def test_sticky_actions_repeat_the_previous_executed_action_at_the_requested_rate():
    condition = Condition(sticky_prob=0.3)
    channel = condition.channel(np.random.default_rng(0))
    commands = np.random.default_rng(9).uniform(-1, 1, size=(5000, 2)).astype(np.float32)
    executed = np.stack([channel(command) for command in commands])
    assert np.array_equal(executed[0], commands[0])  # nothing to repeat before the first step
    repeated = np.all(executed[1:] == executed[:-1], axis=1)
    fresh = np.all(executed == commands, axis=1)
    assert repeated.mean() == pytest.approx(0.3, abs=0.02)
    assert np.all(repeated | fresh[1:])  # every action is either the new command or the previous one
    replayed = Condition(sticky_prob=0.3).channel(np.random.default_rng(0))
    assert np.array_equal(executed[:50], np.stack([replayed(c) for c in commands[:50]]))


def test_sticky_actions_need_a_channel_and_a_channel_without_them_matches_execute():
    with pytest.raises(ValueError, match="channel"):
        Condition(sticky_prob=0.1).execute(np.zeros(2, np.float32), np.random.default_rng(0))
    noisy = Condition(action_noise=0.3)
    channel, rng = noisy.channel(np.random.default_rng(4)), np.random.default_rng(4)
    commands = np.random.default_rng(5).uniform(-1, 1, size=(20, 2)).astype(np.float32)
    assert np.array_equal(np.stack([channel(c) for c in commands]), np.stack([noisy.execute(c, rng) for c in commands]))


def test_camera_shift_translates_the_agent_diagonally_and_keeps_the_frame_size():
    frame = TASK.render(np.array([[20.0, 20.0]], dtype=np.float32))[0]
    shifted = Condition(camera_shift=3).observe(frame)
    assert shifted.shape == frame.shape
    assert agent_centre(shifted) - agent_centre(frame) == pytest.approx([3.0, 3.0], abs=0.01)
    assert np.array_equal(translate(frame, -2)[:-2, :-2], frame[2:, 2:])


def test_rotation_by_a_quarter_turn_is_exactly_rot90():
    image = np.random.default_rng(0).integers(0, 256, size=(2, 17, 17, 3), dtype=np.uint8)
    assert np.array_equal(rotate_zoom(image, 90.0, 1.0), np.rot90(image, k=1, axes=(1, 2)))
    assert np.array_equal(rotate_zoom(image, -90.0, 1.0), np.rot90(image, k=-1, axes=(1, 2)))


def test_camera_rotation_turns_the_agent_about_the_frame_centre():
    frame = TASK.render(np.array([[48.0, 16.0]], dtype=np.float32))[0]
    rotated = Condition(camera_rotate=30).observe(frame)
    centre = (np.array(frame.shape[:2]) - 1) / 2
    row, col = agent_centre(frame) - centre
    angle = math.radians(30)  # counter-clockwise on screen: rows grow downwards
    expected = centre + [row * math.cos(angle) - col * math.sin(angle), col * math.cos(angle) + row * math.sin(angle)]
    assert agent_centre(rotated) == pytest.approx(expected, abs=0.5)


def test_camera_zoom_scales_distances_from_the_centre():
    ramp = np.broadcast_to((np.arange(33) * 4).astype(np.uint8)[None, :, None], (33, 33, 3)).copy()  # value = 4·col
    zoomed = Condition(camera_zoom=2.0).observe(ramp)
    expected = 4 * (16 + (np.arange(33) - 16) / 2)  # column c shows the source column 16 + (c − 16) / 2
    assert zoomed[5, :, 0] == pytest.approx(expected, abs=1)
    frame = TASK.render(np.array([[40.0, 24.0]], dtype=np.float32))[0]
    centre = (np.array(frame.shape[:2]) - 1) / 2
    moved = Condition(camera_zoom=1.25).observe(frame)
    assert agent_centre(moved) - centre == pytest.approx(1.25 * (agent_centre(frame) - centre), abs=0.5)


def test_photometric_shifts_change_colour_but_not_where_things_are():
    frame = TASK.render(np.array([[20.0, 40.0]], dtype=np.float32))[0]
    brighter = Condition(brightness=0.5).observe(frame)
    expected = np.clip(frame.astype(np.float32) * 1.5, 0, 255)
    assert np.abs(brighter.astype(np.float32) - expected).max() <= 1
    red = np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0] = 255
    assert np.array_equal(Condition(hue=1 / 3).observe(red)[0, 0, 0], [0, 255, 0])  # a third of the circle: red → green
    shifted = Condition(hue=0.25).observe(frame)
    agent = np.any(frame != frame[0, 0], axis=-1) & (np.abs(frame.astype(int) - AGENT_RGB).sum(-1) < 60)
    assert np.all(np.abs(shifted[agent].astype(int) - AGENT_RGB).sum(-1) > 60)  # the agent changed colour ...
    assert np.array_equal(
        np.any(shifted != shifted[0, 0], axis=-1), np.any(frame != frame[0, 0], axis=-1)
    )  # ... in place


def test_view_conditions_leave_actions_alone_and_action_conditions_leave_frames_alone():
    frames = TASK.render(np.array([[12.0, 50.0]], dtype=np.float32))
    action = np.array([0.5, 0.1], dtype=np.float32)
    for view in (Condition(camera_shift=2), Condition(camera_rotate=15, camera_zoom=1.2), Condition(hue=0.2)):
        assert np.array_equal(view.execute(action, np.random.default_rng(0)), action)
    for act in (Condition(action_noise=0.4), Condition(sticky_prob=0.5)):
        assert np.array_equal(act.observe(frames), frames)


class ViewpointTwoRoomEnv(TwoRoomEnv):
    """A Two-Room env with a movable camera (the hook MuJoCo tasks implement): renders the moved view itself."""

    def set_viewpoint(self, shift: float, rotate: float, zoom: float) -> bool:
        self.view = Condition(camera_shift=shift, camera_rotate=rotate, camera_zoom=zoom)
        return True

    def _get_obs(self) -> dict[str, np.ndarray]:
        pixels = self.renderer(self._state)[0]
        return self._observe(getattr(self, "view", Condition()).observe(pixels))


def test_an_env_with_its_own_camera_renders_the_view_and_only_the_rest_is_applied_to_pixels():
    condition = Condition(camera_shift=2, camera_rotate=10, brightness=0.2, action_noise=0.1)
    plain = TASK.make_env(seed=0)
    assert plain.set_viewpoint(0.0, 0.0, 1.0) is False  # the task contract's default: no camera of its own
    assert condition.place_camera(plain) is condition  # no camera: everything in pixel space
    env = ViewpointTwoRoomEnv(TASK.geometry, TASK.image_size)
    rest = condition.place_camera(env)
    assert rest == Condition(brightness=0.2, action_noise=0.1)
    start = np.array([20.0, 30.0], dtype=np.float32)
    seen = rest.observe(env.set_state(start)["pixels"])
    assert np.array_equal(seen, condition.observe(plain.set_state(start)["pixels"]))
    assert np.array_equal(env.render(), env.set_state(start)["pixels"])  # render shows the moved view too


def test_a_condition_without_camera_moves_leaves_the_camera_alone():
    env = ViewpointTwoRoomEnv(TASK.geometry, TASK.image_size)
    assert Condition(brightness=0.2).place_camera(env) == Condition(brightness=0.2)
    assert not hasattr(env, "view")


def test_degradation_conditions_sweep_one_axis():
    noise = degradation_conditions("action_noise", [0, 0.1, 0.2, 0.4])
    assert [c.action_noise for c in noise] == [0, 0.1, 0.2, 0.4]
    assert noise[0] == Condition() and all(c.camera_shift == 0 for c in noise)
    assert set(AXES) >= {"action_noise", "camera_shift", "sticky_prob", "camera_rotate", "camera_zoom", "hue"}
    with pytest.raises(ValueError, match="unknown condition axis 'blur'"):
        degradation_conditions("blur", [1])


@pytest.mark.parametrize(
    ("field", "value"),
    [("action_noise", -0.1), ("sticky_prob", 1.0), ("camera_zoom", 0.0), ("brightness", -1.0), ("hue", 0.6)],
)
def test_out_of_range_values_are_refused_with_the_field_named(field, value):
    with pytest.raises(ValueError, match=field):
        Condition(**{field: value})
