"""Reacher on ``dm_control``: a two-link planar arm brings its fingertip to a target (reacher-easy).

The env is the suite's ``reacher``/``easy`` task (target radius 5 cm, 20 ms control
step), without its time limit. Actions are the two joint torques in [-1, 1], as the
suite defines them. Frames come from the suite's fixed top-down camera, rendered by
MuJoCo through EGL at ``image_size`` (64 by default). The state is (shoulder, wrist,
their velocities, target x, target y).

A camera condition moves that camera (tasks/mujoco_view.py): the scene is nearly flat (the
arm 1–2 cm and the target's top 6 cm above the floor, 75 cm below the camera, the sky
beyond the arena's edge), so a shift or a zoom shows little parallax inside the arena and
new sky and wall at the frame's edges. The factors of variation recolour the arm, the
target and the floor, and scale the lights (``Reacher.factors``).

Two success tests: ``"published"`` (the default), the test behind the published
numbers — every joint within 0.05 rad of the goal's (stable-worldmodel's reacher task
``qpos_match``), which holds the fingertip within ~1.8 cm and on the goal's elbow
side; and ``"fingertip"``, the suite's own reach test with the goal's fingertip as the
target — within 6 cm (finger sphere touching the target sphere: target radius 5 cm +
finger radius 1 cm), at least 3× looser.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

from tasks.base import Task, TaskEnv
from tasks.events import ImpossibleEvents
from tasks.factors import Factor
from tasks.mujoco_view import MovableCamera, SceneLights

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported (by dm_control, on first use): headless
# Software Mesa (llvmpipe) renders on one thread: at 64×64 its thread hand-offs cost more than they
# save (same pixels; reacher 22 -> 38, cube 5.0 -> 6.5 frames/s here). GPU drivers ignore it.
os.environ.setdefault("LP_NUM_THREADS", "1")

LINK_LENGTHS = (0.12, 0.12)  # m: shoulder to wrist, wrist to fingertip (reacher.xml body offsets)
SUCCESS_RADIUS = 0.05 + 0.01  # m: reacher-easy's target radius (_BIG_TARGET) + the finger's radius
JOINT_TOLERANCE = 0.05  # rad, on every joint's |Δqpos|: stable-worldmodel ReacherQPosMatchTask.qpos_threshold
CAMERA = "fixed"  # the suite's top-down camera (camera 0)
# The materials the colour factors recolour (reacher.xml, common/materials.xml): factor name -> material.
FACTOR_MATERIALS = {"agent_colour": "self", "object_colour": "target", "background_colour": "grid"}


def fingertip(states: np.ndarray) -> np.ndarray:
    """Fingertip (x, y) from joint angles: (..., S) -> (..., 2), the arm's forward kinematics."""
    states = np.asarray(states, dtype=np.float64)
    shoulder, elbow = states[..., 0], states[..., 0] + states[..., 1]
    x = LINK_LENGTHS[0] * np.cos(shoulder) + LINK_LENGTHS[1] * np.cos(elbow)
    y = LINK_LENGTHS[0] * np.sin(shoulder) + LINK_LENGTHS[1] * np.sin(elbow)
    return np.stack([x, y], axis=-1)


def reach(target: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Joint angles (shoulder, wrist) that put the fingertip at ``target``; the elbow side nearer ``near``.

    The shoulder turns freely, so its angle is the turn nearest ``near``'s (not wrapped): the
    published test compares joint angles unwrapped.
    """
    l1, l2 = LINK_LENGTHS
    distance = np.clip(np.linalg.norm(target), abs(l1 - l2) + 1e-6, l1 + l2 - 1e-6)
    cosine = (distance**2 - l1**2 - l2**2) / (2 * l1 * l2)
    solutions = []
    for wrist in (np.arccos(cosine), -np.arccos(cosine)):
        shoulder = np.arctan2(target[1], target[0]) - np.arctan2(l2 * np.sin(wrist), l1 + l2 * np.cos(wrist))
        solutions.append(np.array([near[0] + _wrap(shoulder - near[0]), wrist]))
    gaps = [np.abs(_wrap_array(solution - near)).sum() for solution in solutions]
    return solutions[int(np.argmin(gaps))]


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def _wrap_array(angles: np.ndarray) -> np.ndarray:
    return (angles + np.pi) % (2 * np.pi) - np.pi


class ReacherEnv(TaskEnv):
    """The suite's reacher-easy behind the task contract."""

    def __init__(self, image_size: int) -> None:
        from dm_control import suite  # imported here, so this module imports without dm_control

        super().__init__(image_size, 2, gym.spaces.Box(-np.inf, np.inf, shape=(6,), dtype=np.float32))
        self.image_size = image_size
        self.env = suite.load("reacher", "easy", task_kwargs={"time_limit": float("inf")})
        self.physics = self.env.physics
        self._started = False
        model, data = self.physics.model.ptr, self.physics.data.ptr
        self.camera = MovableCamera(model, data, CAMERA, image_size)
        self.lights = SceneLights(model)
        self.materials = {factor: model.material(name).id for factor, name in FACTOR_MATERIALS.items()}

    def _start(self, seed: int | None) -> dict[str, np.ndarray]:
        """The suite's random start (joints uniform in range, target 5–20 cm out)."""
        if seed is not None:
            self.env.task.random.seed(seed)
        self.env.reset()
        self._started = True
        return self._observe(self._render())

    def _step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("reset the Reacher env before stepping it")
        time_step = self.env.step(np.clip(action, -1.0, 1.0))
        return self._observe(self._render()), float(time_step.reward or 0.0), {}

    def set_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (6,) or not np.all(np.isfinite(state)):
            raise ValueError(f"state must be finite (shoulder, wrist, their velocities, target x, y), got {state!r}")
        if not self._started:
            self.reset()
        with self.physics.reset_context():
            self.physics.named.data.qpos[["shoulder", "wrist"]] = state[0:2]
            self.physics.named.data.qvel[["shoulder", "wrist"]] = state[2:4]
            self.physics.named.model.geom_pos["target", ["x", "y"]] = state[4:6]
        return self._observe(self._render())

    def get_state(self) -> np.ndarray:
        named = self.physics.named
        return np.concatenate(
            [
                named.data.qpos[["shoulder", "wrist"]],
                named.data.qvel[["shoulder", "wrist"]],
                named.model.geom_pos["target", ["x", "y"]],
            ]
        ).astype(np.float32)

    def set_viewpoint(self, shift: float, rotate: float, zoom: float) -> bool:
        self.camera.move(shift, rotate, zoom)
        return True

    def factor_values(self) -> dict[str, np.ndarray]:
        rgba = self.physics.model.ptr.mat_rgba
        colours = {factor: rgba[material, :3].astype(np.float64) for factor, material in self.materials.items()}
        return colours | {"lighting": np.array([self.lights.intensity])}

    def _set_factors(self, values: dict[str, np.ndarray]) -> None:
        for factor, value in values.items():
            if factor == "lighting":
                self.lights.scale(float(value[0]))
            else:
                self.physics.model.ptr.mat_rgba[self.materials[factor], :3] = value

    def close(self) -> None:
        """Free the EGL context now (left to the garbage collector, EGL errors at exit)."""
        self.env.close()
        self.physics.free()

    def _render(self) -> np.ndarray:
        return self.physics.render(self.image_size, self.image_size, camera_id=CAMERA)


class ReacherExpert:
    """Jacobian-transpose PD control of the fingertip toward the target, plus Gaussian noise.

    Torque = gain · Jᵀ (target − fingertip) − damping · joint velocity, clipped to [-1, 1].
    ``goal`` is a state with the fingertip on the target, so collection reports how
    often the expert touches it.
    """

    def __init__(self, rng: np.random.Generator, noise: float, gain: float = 300.0, damping: float = 0.2) -> None:
        self.rng = rng
        self.noise = noise
        self.gain = gain
        self.damping = damping
        self.goal: np.ndarray | None = None

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        state = np.asarray(obs["state"], dtype=np.float64)
        target = state[4:6]
        if self.goal is None:
            self.goal = np.array([*reach(target, state[:2]), 0.0, 0.0, *target], dtype=np.float32)
        shoulder, elbow = state[0], state[0] + state[1]
        l1, l2 = LINK_LENGTHS
        jacobian = np.array(
            [
                [-l1 * np.sin(shoulder) - l2 * np.sin(elbow), -l2 * np.sin(elbow)],
                [l1 * np.cos(shoulder) + l2 * np.cos(elbow), l2 * np.cos(elbow)],
            ]
        )
        error = target - fingertip(state)
        action = self.gain * jacobian.T @ error - self.damping * state[2:4]
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, 2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class ReacherEvents(ImpossibleEvents):
    """Reacher's impossible events: the world teleports, or the arm turns from ochre to blue."""

    events = ("teleport", "colour_swap")
    swap_factor = "agent_colour"
    swap_rgb = (0.2, 0.4, 0.9)


class Reacher(Task):
    """dm_control reacher-easy: bring the arm to the goal's pose (published: every joint within 0.05 rad)."""

    name = "reacher"
    version = "1"
    action_dim = 2
    state_dim = 6
    # The arm's pose and the target it reaches for; the fingertip is no state dim (a nonlinear map of the angles).
    quantities = {"joint_angles": (0, 1), "target": (4, 5)}
    requires = ("dm-control", "mujoco")
    success_tests = ("published", "fingertip")
    events_class = ReacherEvents
    camera_kind = "viewpoint"  # the suite's top-down camera moves (tasks/mujoco_view.py)
    factors = {  # nominal values: reacher.xml and common/materials.xml
        "agent_colour": Factor.colour("the arm's two links (material 'self')", (0.7, 0.5, 0.3)),
        "object_colour": Factor.colour("the target sphere (material 'target')", (0.6, 0.3, 0.3)),
        "background_colour": Factor.colour("the floor's tint, multiplying its checker texture", (1.0, 1.0, 1.0)),
        "lighting": Factor.scale("the diffuse and ambient intensity of the light and the headlight", 0.3, 1.7),
    }
    default_history = 3  # LeWM uses history 3 outside Two-Room
    default_frameskip = 5  # LeWM
    episode_steps = 200  # LeWM's Reacher data: 10,000 episodes × 200 steps

    def __init__(self, image_size: int = 64, success_test: str | None = None) -> None:
        super().__init__(image_size=image_size, success_test=success_test)

    def _new_env(self) -> ReacherEnv:
        return ReacherEnv(self.image_size)

    def expert(self, rng: np.random.Generator, noise: float = 0.0) -> ReacherExpert:
        return ReacherExpert(rng, noise)

    def success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        """``published``: every joint within 0.05 rad of the goal's (not wrapped, as ``qpos_match``).

        ``fingertip``: the suite's reach test with the goal's fingertip as the target, within 6 cm.
        """
        if self.success_test == "fingertip":
            return self.distance(state, goal) <= SUCCESS_RADIUS
        return self.distance(state, goal) < JOINT_TOLERANCE

    def distance(self, state: np.ndarray, goal: np.ndarray) -> float:
        """``published``: the largest joint error |Δqpos| (rad); ``fingertip``: the fingertips' distance (m)."""
        if self.success_test == "fingertip":
            return float(np.linalg.norm(fingertip(state) - fingertip(goal)))
        joints = np.asarray(state, dtype=np.float64)[:2] - np.asarray(goal, dtype=np.float64)[:2]
        return float(np.abs(joints).max())
