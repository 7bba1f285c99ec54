"""A camera condition on a 3-D task moves the MuJoCo camera: a real viewpoint change, with parallax.

Runs over every registered task whose ``camera_kind`` is ``"viewpoint"`` (Cube, Reacher), so a
new MuJoCo task is tested without editing this file. The geometry is checked on the camera
the renderer reads (``data.cam_xpos`` / ``cam_xmat``), without rendering; the pixels on a few
small frames (Cube renders a few frames/s on software Mesa).
"""

import numpy as np
import pytest

from tasks.base import TASKS, make_task, missing_packages, task_class
from tasks.conditions import Condition, rotate_zoom

IMAGE_SIZE = 32  # px: big enough for a few pixels of shift to be many objects' worth of parallax
VIEWPOINT_TASKS = sorted(name for name in TASKS if task_class(name).camera_kind == "viewpoint")


@pytest.fixture(scope="module", params=VIEWPOINT_TASKS)
def task_and_env(request):
    if missing_packages(task_class(request.param).requires):
        pytest.skip(f"task {request.param!r} needs {', '.join(task_class(request.param).requires)}")
    task = make_task(request.param, image_size=IMAGE_SIZE)
    env = task.make_env(seed=0)
    yield task, env
    env.set_viewpoint(0.0, 0.0, 1.0)
    env.close()


def translated(frame: np.ndarray, right: int, down: int) -> np.ndarray:
    """``frame`` (H, W, 3) moved ``right`` and ``down`` pixels, edges replicated (the 2-D tasks' warp, per axis)."""
    pad = max(abs(right), abs(down))
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    height, width = frame.shape[:2]
    return padded[pad - down : pad - down + height, pad - right : pad - right + width]


def test_there_are_tasks_with_a_real_camera():
    assert {"cube", "reacher"} <= set(VIEWPOINT_TASKS)


def test_a_shift_moves_the_scene_centre_by_its_pixels_and_points_above_the_floor_further(task_and_env):
    """camera_shift's meaning on a 3-D task: the floor under the image centre moves ``shift`` px down and right,
    a point above it (nearer the camera) moves more — parallax."""
    _, env = task_and_env
    camera = env.camera
    centre, above = camera.centre, camera.centre + np.array([0.0, 0.0, 0.1])  # the floor, and 10 cm above it
    env.set_viewpoint(0.0, 0.0, 1.0)
    np.testing.assert_allclose(camera.project(centre), [IMAGE_SIZE / 2] * 2, atol=1e-6)
    still = camera.project(above)
    env.set_viewpoint(3.0, 0.0, 1.0)
    np.testing.assert_allclose(camera.project(centre), [IMAGE_SIZE / 2 + 3] * 2, atol=1e-6)
    motion = camera.project(above) - still
    assert np.all(motion > 3.05), motion  # nearer than the floor: it moves further than the floor does


def test_a_turn_orbits_the_scene_centre_and_turns_the_floor_counter_clockwise_in_the_frame(task_and_env):
    _, env = task_and_env
    camera = env.camera
    env.set_viewpoint(0.0, 0.0, 1.0)
    ahead = camera.centre + 0.1 * camera.default_rotation[:, 1] * np.array(
        [1.0, 1.0, 0.0]
    )  # up the frame, on the floor
    before = camera.project(ahead) - IMAGE_SIZE / 2  # (col, row) from the centre
    env.set_viewpoint(0.0, 20.0, 1.0)
    np.testing.assert_allclose(camera.project(camera.centre), [IMAGE_SIZE / 2] * 2, atol=1e-6)  # the pivot stays
    after = camera.project(ahead) - IMAGE_SIZE / 2
    assert before[1] < 0 and after[0] < before[0] - 0.5  # a point above the centre swings left: counter-clockwise


def test_a_zoom_dollies_towards_the_scene_centre(task_and_env):
    _, env = task_and_env
    camera = env.camera
    env.set_viewpoint(0.0, 0.0, 1.25)
    position = env.camera.data.cam_xpos[camera.id]
    assert np.linalg.norm(position - camera.centre) == pytest.approx(camera.depth / 1.25)
    np.testing.assert_allclose(camera.project(camera.centre), [IMAGE_SIZE / 2] * 2, atol=1e-6)
    env.set_viewpoint(0.0, 0.0, 1.0)


def test_a_moved_camera_renders_a_new_view_not_a_translated_frame_and_the_default_view_exactly_again(task_and_env):
    """The frame seen from a shifted camera is no 2-D translation of the clean frame (parallax, and what lies
    beyond the clean frame's edge); the move is deterministic; the default view renders the clean frame exactly."""
    task, env = task_and_env
    state = env.reset(seed=3)[0]["state"]
    env.set_viewpoint(0.0, 0.0, 1.0)
    clean = env.set_state(state)["pixels"]
    env.set_viewpoint(3.0, 0.0, 1.0)
    moved = env.set_state(state)["pixels"].astype(int)
    gaps = {
        (right, down): np.abs(moved - translated(clean, right, down)).mean()
        for right in range(-6, 7)
        for down in range(-6, 7)
    }  # mean |difference| from each 2-D translation of the clean frame
    nearest = min(gaps, key=gaps.get)
    assert gaps[nearest] > 1.0, f"{task.name}: the moved view is the clean frame translated by {nearest} px"

    fresh = task.make_env(seed=0)  # the same move on another env renders the same frame
    try:
        assert Condition(camera_shift=3.0, brightness=0.1).place_camera(fresh) == Condition(brightness=0.1)
        assert np.array_equal(fresh.set_state(state)["pixels"], moved)
    finally:
        fresh.close()
    env.set_viewpoint(0.0, 0.0, 1.0)
    assert np.array_equal(env.set_state(state)["pixels"], clean)


def test_a_3d_turn_turns_the_frame_the_way_the_2d_warp_does(task_and_env):
    """camera_rotate keeps one sense on every task: the frame seen from the turned camera is nearer the clean
    frame turned counter-clockwise (the 2-D warp) than clockwise."""
    task, env = task_and_env
    state = env.reset(seed=3)[0]["state"]
    env.set_viewpoint(0.0, 0.0, 1.0)
    clean = env.set_state(state)["pixels"]
    env.set_viewpoint(0.0, 20.0, 1.0)
    turned = env.set_state(state)["pixels"].astype(int)
    env.set_viewpoint(0.0, 0.0, 1.0)
    counter, clockwise = (np.abs(turned - rotate_zoom(clean, sign * 20.0, 1.0)).mean() for sign in (1, -1))
    assert counter < clockwise, f"{task.name}: {counter:.2f} vs {clockwise:.2f}"
