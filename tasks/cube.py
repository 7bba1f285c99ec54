"""OGBench-Cube on ``ogbench``'s ``visual-cube-single-v0``: a UR5e arm picks and places one cube.

The env is the package's ``CubeEnv`` with the registered id's settings (64×64 pixels
from the ``front_pixels`` camera, arm drawn translucent, targets hidden) in the mode
OGBench collects its datasets in (``data_collection``: random arm and cube at reset, no
termination). Actions are the package's 5-D relative end-effector commands in [-1, 1]
(x, y, z, yaw, gripper). Frames are rendered by MuJoCo through EGL.

The state holds the named quantities first — end-effector position, yaw, gripper
opening and contact, cube position and quaternion — then MuJoCo's qpos, qvel and ctrl,
so that ``set_state`` places the world exactly and a placed world renders as recorded.
One success test, ``"published"``: OGBench's, the cube within 4 cm of the goal's cube
position (``CubeEnv._compute_successes``), which is also the test of the published
evaluation (stable-worldmodel's OGBCube places the goal's cube position as the target).

A camera condition moves the ``front_pixels`` camera about the table (tasks/mujoco_view.py),
so the arm, the cube and the table show parallax. The factors of variation recolour the
cube, the gripper and the floor, and scale the lights (``Cube.factors``).

Rendering is the cost here (software Mesa: physics ~2 ms a step, a frame ~150–300 ms
of CPU). The package asks for a 4096² shadow map; a 1024² map (``shadow_size``) draws
the same 64×64 frames — mean absolute difference 0.012 of 255, 0.06% of pixels off by
more than 8 — for ~40% less render time (measured on 12 scenes: 273–323 → 159–163 ms
of CPU per frame). Cutting shadows altogether, the skybox or multisampling changes
what the model sees (mean differences of 15, 0.4 and 1.0), so they stay.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from tasks.base import Task, TaskEnv
from tasks.events import ImpossibleEvents
from tasks.factors import Factor
from tasks.mujoco_view import MovableCamera, SceneLights

if TYPE_CHECKING:  # the packages are imported where they are used, so the class imports without them
    from ogbench.manipspace.envs.cube_env import CubeEnv as PackageCubeEnv
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported: headless rendering
# Software Mesa (llvmpipe) renders on one thread: at 64×64 its thread hand-offs cost more than they
# save (same pixels; reacher 22 -> 38, cube 5.0 -> 6.5 frames/s here). GPU drivers ignore it.
os.environ.setdefault("LP_NUM_THREADS", "1")

ENV_ID = "visual-cube-single-v0"
SUCCESS_THRESHOLD = 0.04  # metres, inclusive: ogbench and stable-worldmodel CubeEnv._compute_successes
ARM_SAMPLING_BOUNDS = np.array([[0.25, -0.35, 0.20], [0.6, 0.35, 0.35]])  # ogbench ManipSpaceEnv
TARGET_SAMPLING_BOUNDS = np.array([[0.3, -0.3], [0.55, 0.3]])  # ogbench ManipSpaceEnv
NOISE_SCALE = np.array([1.0, 1.0, 1.0, 3.0, 10.0])  # per action dim, OGBench's generate_manipspace.py
CUBE_HEIGHT = 0.02  # resting cube centre, as ogbench places cubes and targets
CAMERA = "front_pixels"  # the camera visual-cube renders its pixels from
CUBE_RGB = (0.96, 0.26, 0.33)  # ogbench's "red", the single cube's colour (ManipSpaceEnv._colors)
GRIPPER_RGB = (0.61, 0.28, 0.82)  # ogbench's "purple": the gripper's colour in its pixel scenes
GRIPPER_MATERIALS = ("ur5e/robotiq/black", "ur5e/robotiq/pad_gray")  # recoloured purple by ogbench for pixels
NQ, NV, NU = 21, 20, 7  # MuJoCo sizes of the single-cube scene (arm 6 + gripper 8 + cube 7; 7 actuators)

# Layout of the state vector: name -> slice.
STATE_FIELDS: dict[str, slice] = {
    "effector_pos": slice(0, 3),
    "effector_yaw": slice(3, 4),
    "gripper_opening": slice(4, 5),
    "gripper_contact": slice(5, 6),
    "cube_pos": slice(6, 9),
    "cube_quat": slice(9, 13),
    "qpos": slice(13, 13 + NQ),
    "qvel": slice(13 + NQ, 13 + NQ + NV),
    "ctrl": slice(13 + NQ + NV, 13 + NQ + NV + NU),
}
STATE_DIM = 13 + NQ + NV + NU


@functools.cache
def _shadow_sized_env_class() -> type[PackageCubeEnv]:
    """The package's CubeEnv with the shadow map's size set before the model compiles, observed after each step.

    ``mj_step`` leaves positions, sites and contact forces as they were before its last
    integration (2 ms behind qpos). Recomputing them after the step makes each frame and
    state a function of qpos/qvel/ctrl alone, so ``set_state`` then ``step`` replays a
    recorded transition exactly. The package's controller then reads the current
    effector position instead of the 2 ms old one, so trajectories drift from the plain
    package's slightly (joint positions within ~0.03 after 60 random steps). Built on first
    use, so that this module imports without ogbench.
    """
    import mujoco
    from dm_control import mjcf
    from ogbench.manipspace.envs.cube_env import CubeEnv as PackageCubeEnv

    class ShadowSizedCubeEnv(PackageCubeEnv):
        def __init__(self, shadow_size: int | None, **kwargs: Any) -> None:
            self._shadow_size = shadow_size
            super().__init__(**kwargs)

        def build_mjcf_model(self) -> mjcf.RootElement:
            model = super().build_mjcf_model()
            if self._shadow_size is not None:
                model.visual.quality.shadowsize = self._shadow_size
            return model

        def post_step(self) -> None:
            mujoco.mj_forward(self.model, self.data)
            mujoco.mj_rnePostConstraint(self.model, self.data)
            super().post_step()

    return ShadowSizedCubeEnv


def package_env(
    image_size: int, shadow_size: int | None, ob_type: str = "pixels", mode: str = "data_collection"
) -> PackageCubeEnv:
    """The package's env for ``visual-cube-single-v0`` (its registered settings), unwrapped.

    ``data_collection`` is the mode OGBench generates its datasets in; ``task`` holds its
    five evaluation tasks.
    """
    import ogbench  # noqa: F401  (registers the OGBench env ids)

    kwargs = dict(gym.spec(ENV_ID).kwargs)
    kwargs.update(width=image_size, height=image_size, ob_type=ob_type, mode=mode, terminate_at_goal=False)
    return _shadow_sized_env_class()(shadow_size, **kwargs)


def read_state(env: PackageCubeEnv) -> np.ndarray:
    """The state vector (STATE_FIELDS) of the package env as it stands, float32."""
    info = env.compute_ob_info()
    data = env.data
    parts = [
        info["proprio/effector_pos"],
        info["proprio/effector_yaw"],
        info["proprio/gripper_opening"],
        info["proprio/gripper_contact"],
        info["privileged/block_0_pos"],
        info["privileged/block_0_quat"],
        data.qpos,
        data.qvel,
        data.ctrl,
    ]
    return np.concatenate(parts).astype(np.float32)


class CubeEnv(TaskEnv):
    """OGBench's single-cube scene behind the task contract."""

    def __init__(self, image_size: int, shadow_size: int | None) -> None:
        super().__init__(image_size, 5, gym.spaces.Box(-np.inf, np.inf, shape=(STATE_DIM,), dtype=np.float32))
        self.image_size = image_size
        self.env = package_env(image_size, shadow_size)
        self._camera: MovableCamera | None = None  # both built with the package's model, at its first reset
        self._lights: SceneLights | None = None

    def _start(self, seed: int | None) -> dict[str, np.ndarray]:
        """The package's random arm pose and cube pose."""
        pixels, _ = self.env.reset(seed=seed)
        if self.env.model.nq != NQ or self.env.model.nv != NV or self.env.model.nu != NU:
            raise RuntimeError(f"ogbench's cube scene changed shape (nq, nv, nu) = {self.env.model.nq}, ...")
        return self._observe(pixels)

    def _step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, dict[str, Any]]:
        pixels, *_ = self.env.step(np.clip(action, -1.0, 1.0))
        return self._observe(pixels), 0.0, {}

    def set_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Set MuJoCo's qpos, qvel and ctrl from the state's tail and recompute everything derived."""
        import mujoco

        state = np.asarray(state, dtype=np.float64)
        if state.shape != (STATE_DIM,) or not np.all(np.isfinite(state)):
            raise ValueError(f"state must be a finite vector of {STATE_DIM} values (tasks.cube.STATE_FIELDS)")
        if self._pixels is None:
            self.env.reset()
        self.env.set_state(state[STATE_FIELDS["qpos"]], state[STATE_FIELDS["qvel"]])
        self.env.data.ctrl[:] = state[STATE_FIELDS["ctrl"]]
        mujoco.mj_forward(self.env.model, self.env.data)
        mujoco.mj_rnePostConstraint(self.env.model, self.env.data)  # contact forces, read by gripper_contact
        return self._observe(self.env.render())

    def get_state(self) -> np.ndarray:
        return read_state(self.env)

    @property
    def camera(self) -> MovableCamera:
        """The package's rendering camera, movable (built with the package's model, at its first reset)."""
        if self._camera is None:
            if self._pixels is None:
                self.reset()
            self._camera = MovableCamera(self.env.model, self.env.data, CAMERA, self.image_size)
        return self._camera

    @property
    def lights(self) -> SceneLights:
        """The package's lights, scalable (built with the package's model, at its first reset)."""
        if self._lights is None:
            if self._pixels is None:
                self.reset()
            self._lights = SceneLights(self.env.model)
        return self._lights

    def set_viewpoint(self, shift: float, rotate: float, zoom: float) -> bool:
        self.camera.move(shift, rotate, zoom)
        return True

    def factor_values(self) -> dict[str, np.ndarray]:
        lights = self.lights  # the package's model is compiled from here on
        model = self.env.model
        return {
            # the package paints the cube from _cube_colors at every reset and step, so that is where its colour lives
            "object_colour": self.env._cube_colors[0, :3].astype(np.float64),
            "agent_colour": model.mat_rgba[model.material(GRIPPER_MATERIALS[0]).id, :3].astype(np.float64),
            "background_colour": model.mat_rgba[model.material("grid").id, :3].astype(np.float64),
            "lighting": np.array([lights.intensity]),
        }

    def _set_factors(self, values: dict[str, np.ndarray]) -> None:
        model = self.env.model
        for factor, value in values.items():
            if factor == "object_colour":
                self.env._cube_colors[0, :3] = value
                model.geom_rgba[self.env._cube_geom_ids_list[0], :3] = value  # now, not only from the next step
            elif factor == "agent_colour":
                for material in GRIPPER_MATERIALS:
                    model.mat_rgba[model.material(material).id, :3] = value
            elif factor == "background_colour":
                model.mat_rgba[model.material("grid").id, :3] = value
            else:
                self.lights.scale(float(value[0]))

    def close(self) -> None:
        """Free the EGL renderer now (left to the garbage collector, EGL errors at exit)."""
        renderer = getattr(self.env, "_renderer", None)
        if renderer is not None:
            renderer.close()
            self.env._renderer = None


@functools.cache
def _seeded_oracle_class() -> type[CubeMarkovOracle]:
    """OGBench's Markov cube oracle, needing no env: its end pose comes from our generator, not np.random."""
    from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle

    class SeededCubeOracle(CubeMarkovOracle):
        def __init__(self, rng: np.random.Generator, min_norm: float = 0.4) -> None:  # 0.4: the oracle's default
            super().__init__(env=None, min_norm=min_norm)
            self.rng = rng

        def reset(self, ob: Any, info: dict[str, Any]) -> None:
            self._done = False
            self._step = 0
            self._final_pos = self.rng.uniform(*ARM_SAMPLING_BOUNDS)  # where the arm rests after the place
            self._final_yaw = self.rng.uniform(-np.pi, np.pi)

    return SeededCubeOracle


class CubeExpert:
    """OGBench's data-collection loop: the Markov oracle picks the cube and places it at a random target.

    As OGBench generates its ``noisy`` datasets (data_gen_scripts/generate_manipspace.py):
    a new target (uniform over the table, any yaw) whenever the oracle reports its
    pick-and-place done, and Gaussian action noise whose level ξ is drawn per episode
    uniformly in [0, ``noise``], with std (ξ, ξ, ξ, 3ξ, 10ξ) on (x, y, z, yaw, gripper).
    ``goal`` is the first target, as a state, so collection reports how often the first
    pick-and-place lands within 4 cm.
    """

    def __init__(self, rng: np.random.Generator, noise: float) -> None:
        self.rng = rng
        self.noise_std = rng.uniform(0.0, noise) * NOISE_SCALE if noise > 0 else np.zeros(5)
        self.oracle = _seeded_oracle_class()(rng)
        self.target: np.ndarray | None = None  # (x, y, z, yaw)
        self.goal: np.ndarray | None = None

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        state = np.asarray(obs["state"], dtype=np.float64)
        if self.target is None or self.oracle.done:
            self._new_target(state)
        action = np.asarray(self.oracle.select_action(None, self._oracle_info(state)), dtype=np.float64)
        if np.any(self.noise_std > 0):
            action = action + self.rng.normal(0.0, self.noise_std)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _new_target(self, state: np.ndarray) -> None:
        from ogbench.manipspace import lie

        xy = self.rng.uniform(*TARGET_SAMPLING_BOUNDS)
        self.target = np.array([*xy, CUBE_HEIGHT, self.rng.uniform(0, 2 * np.pi)])
        if self.goal is None:
            goal = state.astype(np.float32).copy()
            goal[STATE_FIELDS["cube_pos"]] = self.target[:3]
            goal[STATE_FIELDS["cube_quat"]] = lie.SO3.from_z_radians(self.target[3]).wxyz
            self.goal = goal
        self.oracle.reset(None, {})

    def _oracle_info(self, state: np.ndarray) -> dict[str, Any]:
        """The slice of the package's ``info`` dict the oracle reads, rebuilt from the state."""
        from ogbench.manipspace import lie

        cube_quat = state[STATE_FIELDS["cube_quat"]]
        cube_yaw = lie.SO3(wxyz=cube_quat / np.linalg.norm(cube_quat)).compute_yaw_radians()
        return {
            "proprio/effector_pos": state[STATE_FIELDS["effector_pos"]],
            "proprio/effector_yaw": state[STATE_FIELDS["effector_yaw"]],
            "proprio/gripper_opening": state[STATE_FIELDS["gripper_opening"]],
            "proprio/gripper_contact": state[STATE_FIELDS["gripper_contact"]],
            "privileged/target_block": 0,
            "privileged/block_0_pos": state[STATE_FIELDS["cube_pos"]],
            "privileged/block_0_yaw": np.array([cube_yaw]),
            "privileged/target_block_pos": self.target[:3],
            "privileged/target_block_yaw": self.target[3:4],
        }


class CubeEvents(ImpossibleEvents):
    """Cube's impossible events: the world teleports, or the cube turns from red to blue (LeWM's colour change)."""

    events = ("teleport", "colour_swap")
    swap_factor = "object_colour"
    swap_rgb = (0.35, 0.55, 0.91)  # ogbench's "blue", the second cube's colour in its multi-cube scenes


class Cube(Task):
    """OGBench-Cube (single): move the cube to the goal's position (success: within 4 cm)."""

    name = "cube"
    version = "1"
    action_dim = 5
    state_dim = STATE_DIM
    quantities = {  # what a paper-style probe reads: where the cube is, where the effector is
        "cube": tuple(range(STATE_FIELDS["cube_pos"].start, STATE_FIELDS["cube_pos"].stop)),
        "effector": tuple(range(STATE_FIELDS["effector_pos"].start, STATE_FIELDS["effector_pos"].stop)),
    }
    requires = ("ogbench", "mujoco")  # ogbench brings dm-control, whose mjcf builds the scene
    events_class = CubeEvents
    camera_kind = "viewpoint"  # the front_pixels camera moves (tasks/mujoco_view.py)
    factors = {  # nominal values: ogbench's pixel scene (ManipSpaceEnv, floor_wall.xml)
        "object_colour": Factor.colour("the cube", CUBE_RGB),
        "agent_colour": Factor.colour("the gripper (translucent, as the arm)", GRIPPER_RGB),
        "background_colour": Factor.colour("the floor's tint, multiplying its checker texture", (1.0, 1.0, 1.0)),
        "lighting": Factor.scale("the diffuse and ambient intensity of the lights and the headlight", 0.3, 1.7),
    }
    default_history = 3  # LeWM
    default_frameskip = 5  # LeWM
    episode_steps = 200  # LeWM's Cube data: 10,000 episodes × 200 steps

    def __init__(
        self,
        image_size: int = 64,  # visual-cube-single-v0 renders 64×64
        shadow_size: int = 1024,  # the package asks 4096; 1024 draws the same 64×64 frames to a few pixels
        success_test: str | None = None,
    ) -> None:
        if not (isinstance(shadow_size, int) and shadow_size >= 64):
            raise ValueError(f"shadow_size must be an integer of at least 64 (texels), got {shadow_size!r}")
        super().__init__(image_size=image_size, success_test=success_test, shadow_size=shadow_size)
        self.shadow_size = shadow_size

    def _new_env(self) -> CubeEnv:
        return CubeEnv(self.image_size, self.shadow_size)

    def expert(self, rng: np.random.Generator, noise: float = 0.0) -> CubeExpert:
        return CubeExpert(rng, noise)

    def success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        """``published`` (OGBench's test, as the authors' evaluation): the cube within 4 cm of the goal's cube."""
        return self.distance(state, goal) <= SUCCESS_THRESHOLD

    def distance(self, state: np.ndarray, goal: np.ndarray) -> float:
        """Distance (m) between the cube's positions."""
        cube = STATE_FIELDS["cube_pos"]
        return float(np.linalg.norm(np.asarray(state, np.float64)[cube] - np.asarray(goal, np.float64)[cube]))
