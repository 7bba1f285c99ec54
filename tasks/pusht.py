"""Push-T on ``gym-pusht``: push a T-shaped block onto a fixed target pose with a round pusher.

The world is the package's 512 × 512 pixel board (pymunk physics, pygame drawing).
The package's action is the pusher's target position, which a PD controller tracks.
An action in [-1, 1]^2 sets it by ``action_mode``: ``"relative"`` (the default, as the
published evaluation: stable-worldmodel's PushT with ``relative=True``, also DINO-WM)
puts the target ``100 px × action`` away from the pusher; ``"absolute"`` spans the
board (``-1 -> 0``, ``1 -> 512``). The state is the package's own (agent x, agent y,
block x, block y, block angle mod 2π). Frames are the package's rendering, resized by
the package from 512 px to ``image_size`` (96 natively).

Two success tests, applied to any pair (state, goal state): ``"published"`` (the
default), the test behind the published LeWM / PLDM / DINO-WM numbers —
‖(agent xy, block xy) − goal's‖ < 20 px and the wrapped block-angle difference
< π/9 (stable-worldmodel ``PushT.eval_state``); and ``"coverage"``, the package's own —
the block covers more than 95% of the T placed at the goal's pose, about 10× stricter
(coverage falls below 0.95 at a 2 px shift or a 2° turn). The package's own goal pose
is fixed, so image goals come from placing the world at a goal state (``set_state``)
and rendering it. The board is seen from straight above with no depth, so a camera
condition warps the frames (``camera_kind = "pixel"``); the factors of variation are the
colours of the pusher, the block and the board (``PushT.factors``).
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

if TYPE_CHECKING:  # the packages are imported where they are used, so the class imports without them
    import pymunk
    import shapely
    from gym_pusht.envs.pusht import PushTEnv as PackagePushTEnv

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # headless pygame, before gym_pusht imports it

BOARD_SIZE = 512.0  # the package's board, in pixels; absolute action targets live in [0, 512]^2
ACTION_MODES = ("relative", "absolute")
RELATIVE_ACTION_SCALE = 100.0  # px of target offset per unit action: stable-worldmodel PushT.action_scale
POSITION_TOLERANCE = 20.0  # px, on ‖(agent xy, block xy) − goal's‖: stable-worldmodel PushT.eval_state
ANGLE_TOLERANCE = np.pi / 9  # rad, on the wrapped block-angle difference: stable-worldmodel PushT.eval_state
GOAL_POSE = np.array([256.0, 256.0, np.pi / 4])  # the package's fixed goal (x, y, angle), PushTEnv._setup
SUCCESS_COVERAGE = 0.95  # the package's success_threshold
AGENT_RADIUS = 15.0  # the package's pusher disc (PushTEnv.add_circle)
ARENA_LOW, ARENA_HIGH = 5.0 + 2.0, 506.0 - 2.0  # inner faces of the package's walls (segments of radius 2)
GOAL_AGENT_POSITION = np.array([256.0, 400.0])  # the package's start position of the pusher, clear of the goal T
STAND_OFF = 6.0  # px between the pusher's edge and the block before a push
PLACED_COVERAGE = 0.9  # the expert's block stays "placed" (it heads home) until coverage falls below this
# The package's colours (pygame colour names in PushTEnv.add_circle, add_tee and _draw), as RGB in [0, 1].
AGENT_RGB = (65 / 255, 105 / 255, 225 / 255)  # RoyalBlue: the pusher
BLOCK_RGB = (119 / 255, 136 / 255, 153 / 255)  # LightSlateGray: the T
BOARD_RGB = (1.0, 1.0, 1.0)  # white: the board
# Factor of variation -> the attribute of the coloured env (_coloured_env_class) that holds its colour.
FACTOR_ATTRIBUTES = {"agent_colour": "agent_rgb", "object_colour": "block_rgb", "background_colour": "board_rgb"}


def action_to_target(action: np.ndarray) -> np.ndarray:
    """[-1, 1]^2 action -> the package's pixel-space target position in [0, 512]^2."""
    return (np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) + 1.0) * (BOARD_SIZE / 2)


def target_to_action(target: np.ndarray) -> np.ndarray:
    """Pixel-space target position -> [-1, 1]^2 action (clipped to the board)."""
    return np.clip(np.asarray(target, dtype=np.float64) / (BOARD_SIZE / 2) - 1.0, -1.0, 1.0).astype(np.float32)


def relative_action_to_target(action: np.ndarray, agent: np.ndarray) -> np.ndarray:
    """[-1, 1]^2 relative action -> the target position: the pusher's position + 100 px × action."""
    offset = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) * RELATIVE_ACTION_SCALE
    return np.asarray(agent, dtype=np.float64) + offset


def target_to_relative_action(target: np.ndarray, agent: np.ndarray) -> np.ndarray:
    """Target position -> relative action; a target beyond reach is brought in along its direction."""
    action = (np.asarray(target, dtype=np.float64) - np.asarray(agent, dtype=np.float64)) / RELATIVE_ACTION_SCALE
    return (action / max(1.0, float(np.abs(action).max()))).astype(np.float32)


def pose_errors(state: np.ndarray, goal: np.ndarray) -> tuple[float, float]:
    """The published test's two errors: ‖(agent xy, block xy) − goal's‖ (px) and the wrapped angle gap (rad)."""
    state, goal = np.asarray(state, dtype=np.float64), np.asarray(goal, dtype=np.float64)
    position_error = float(np.linalg.norm(state[:4] - goal[:4]))
    turn = abs(state[4] - goal[4]) % (2 * np.pi)
    return position_error, float(min(turn, 2 * np.pi - turn))


def _package_env_class() -> type[PackagePushTEnv]:
    """The package's PushTEnv class (importing gym_pusht, which needs pygame and pymunk)."""
    from gym_pusht.envs.pusht import PushTEnv as PackagePushTEnv

    return PackagePushTEnv


def _pygame_colour(rgb: np.ndarray) -> tuple[int, int, int]:
    """An RGB colour in [0, 1] as pygame's 0–255 integers."""
    return tuple(int(round(float(c) * 255)) for c in np.clip(rgb, 0.0, 1.0))


@functools.cache
def _coloured_env_class() -> type[PackagePushTEnv]:
    """The package's PushTEnv whose pusher, block and board colours are settable (the package's by default).

    The package builds its bodies anew at every reset (``_setup``), so the colours are
    painted on after each; its ``_draw`` fills the board white, so it is repeated here
    with the board's colour. At the default colours the frames are the package's own.
    """
    import pygame
    import pymunk.pygame_util
    from gym_pusht.envs.pymunk_override import DrawOptions

    class ColouredPushTEnv(_package_env_class()):
        agent_rgb, block_rgb, board_rgb = AGENT_RGB, BLOCK_RGB, BOARD_RGB

        def _setup(self) -> None:
            super()._setup()
            self.paint()

        def paint(self) -> None:
            """Give the current pusher and block their colours."""
            for shape in self.agent.shapes:
                shape.color = pygame.Color(*_pygame_colour(self.agent_rgb))
            for shape in self.block.shapes:
                shape.color = pygame.Color(*_pygame_colour(self.block_rgb))

        def _draw(self) -> pygame.Surface:
            # The package's _draw, with the board filled in board_rgb instead of white.
            screen = pygame.Surface((512, 512))
            screen.fill(_pygame_colour(self.board_rgb))
            draw_options = DrawOptions(screen)
            goal_body = self.get_goal_pose_body(self.goal_pose)
            for shape in self.block.shapes:
                goal_points = [goal_body.local_to_world(v) for v in shape.get_vertices()]
                goal_points = [pymunk.pygame_util.to_pygame(point, draw_options.surface) for point in goal_points]
                goal_points += [goal_points[0]]
                pygame.draw.polygon(screen, pygame.Color("LightGreen"), goal_points)
            self.space.debug_draw(draw_options)
            return screen

    return ColouredPushTEnv


@functools.cache
def _tee() -> tuple[pymunk.Body, tuple[pymunk.Poly, ...]]:
    """The package's T body and its two rectangles (local vertices), built once per process."""
    import pymunk

    body, shapes = _package_env_class().add_tee(pymunk.Space(), (0, 0), 0)
    return body, tuple(shapes)


def _tee_shapes() -> tuple[pymunk.Poly, ...]:
    return _tee()[1]


@functools.cache
def _tee_local_vertices() -> tuple[np.ndarray, ...]:
    """Each T rectangle's vertices in the block's frame: (4, 2) per shape."""
    return tuple(np.array([tuple(vertex) for vertex in shape.get_vertices()]) for shape in _tee_shapes())


def tee_polygon(pose: np.ndarray) -> shapely.MultiPolygon:
    """The T block at pose (x, y, angle): the package's two rectangles, placed as pymunk places them.

    Same vertices and transform as the package's ``pymunk_to_shapely(get_goal_pose_body(pose), shapes)``
    (tests check the two agree), built from NumPy instead of pymunk bodies, ~5× faster.
    """
    import shapely

    x, y, angle = np.asarray(pose, dtype=np.float64)
    placed = [vertices @ _rotation(angle).T + np.array([x, y]) for vertices in _tee_local_vertices()]
    return shapely.MultiPolygon([shapely.Polygon(vertices) for vertices in placed])


def coverage(block_pose: np.ndarray, goal_pose: np.ndarray) -> float:
    """Fraction of the goal zone (the T at ``goal_pose``) covered by the T at ``block_pose``, as in the package."""
    goal = tee_polygon(goal_pose)
    return float(goal.intersection(tee_polygon(block_pose)).area / goal.area)


def tee_keypoints(pose: np.ndarray) -> np.ndarray:
    """The T's 8 corner points (the package's keypoints) at pose (x, y, angle): (8, 2)."""
    x, y, angle = np.asarray(pose, dtype=np.float64)
    local = np.concatenate(_tee_local_vertices())  # (8, 2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return local @ rotation.T + np.array([x, y])


class PushTEnv(TaskEnv):
    """The package's PushTEnv behind the task contract.

    The package ends an episode when its fixed goal is covered; here the caller sets the
    length, and the package's coverage of its own goal is passed on in ``info``.
    """

    def __init__(self, image_size: int, action_mode: str = "relative") -> None:
        high = np.array([BOARD_SIZE, BOARD_SIZE, BOARD_SIZE, BOARD_SIZE, 2 * np.pi], dtype=np.float32)
        super().__init__(image_size, 2, gym.spaces.Box(np.zeros(5, dtype=np.float32), high, dtype=np.float32))
        self.action_mode = action_mode
        self.env = _coloured_env_class()(
            obs_type="pixels_agent_pos", observation_width=image_size, observation_height=image_size
        )

    def _start(self, seed: int | None) -> dict[str, np.ndarray]:
        """The package's random start (agent and block uniform, any angle)."""
        package_obs, _ = self.env.reset(seed=seed)
        return self._observe(package_obs["pixels"])

    def _step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, dict[str, Any]]:
        if self.action_mode == "relative":
            target = relative_action_to_target(action, np.array(self.env.agent.position))
        else:
            target = action_to_target(action)
        package_obs, reward, _, _, info = self.env.step(target)
        return self._observe(package_obs["pixels"]), float(reward), {"coverage": info["coverage"]}

    def set_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Place agent and block (at rest) through the package's ``reset_to_state``.

        The package sets the block's position before its angle, and pymunk turns a body
        about its centre of gravity, so the block would land off the given position (the
        package's docstring warns of it); the position passed in is corrected for that
        turn. The package then runs one 10 ms physics step, so a block placed overlapping
        the agent or a wall is pushed clear of it; ``get_state`` reports where it ends up.
        """
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (5,) or not np.all(np.isfinite(state)):
            raise ValueError(f"state must be a finite (agent x, agent y, block x, block y, angle), got {state!r}")
        com = np.array(_tee_com())
        placed = state.copy()
        placed[2:4] = state[2:4] - com + _rotation(state[4]) @ com  # where to put it at angle 0
        package_obs, _ = self.env.reset(options={"reset_to_state": placed})
        return self._observe(package_obs["pixels"])

    def get_state(self) -> np.ndarray:
        agent, block = self.env.agent, self.env.block
        return np.array([*agent.position, *block.position, block.angle % (2 * np.pi)], dtype=np.float32)

    def factor_values(self) -> dict[str, np.ndarray]:
        env = self.env
        return {
            name: np.array(getattr(env, attribute), dtype=np.float64) for name, attribute in FACTOR_ATTRIBUTES.items()
        }

    def _set_factors(self, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            setattr(self.env, FACTOR_ATTRIBUTES[name], tuple(float(c) for c in value))
        if getattr(self.env, "agent", None) is not None:  # the bodies of the current episode take them now
            self.env.paint()

    def close(self) -> None:
        self.env.close()


class PushTExpert:
    """Scripted pusher: goes around the block to the best contact point, then pushes it.

    Each contact point on the T's outline (every ``spacing`` px) is scored by how well a
    push there, into the block, moves its pose toward the goal: a quasi-static model in
    which a push at point c along d translates the centre of mass along d and turns the
    block by (c − com) × d / ρ² (ρ: radius of gyration). The pusher walks around the
    block (never through it) to stand off the best point, then pushes, aiming to move
    the block by a fraction ``gain`` of the remaining error, so pushes shrink near the
    goal. Once the block is placed, the pusher walks back around it to its own goal
    position. The target becomes an action by the task's ``action_mode`` (a relative
    target out of reach is approached along its direction), and Gaussian noise of std
    ``noise`` is added to each action. ``goal`` is the package's goal pose with the
    pusher at its start position, so collection reports how often the expert gets
    there. Measured over 20 episodes of 200 steps (published test / coverage test):
    relative actions 20/20 / 20/20 at noise 0, 20/20 / 20/20 at 0.05, 14/20 / 19/20 at
    0.1 (10 px of target jitter knocks the placed block on the way back); absolute
    targets 20/20 / 20/20 at noise 0 and 9/20 / 15/20 at 0.05 (there 13 px of target jitter).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        noise: float,
        action_mode: str = "relative",
        spacing: float = 8.0,
        gain: float = 0.6,
        angle_scale: float = 60.0,  # px per radian when position and angle errors are compared
        travel_scale: float = 400.0,  # px of walk that cost as much as a perfectly aimed push gains
    ) -> None:
        self.rng = rng
        self.action_mode = action_mode
        self.travel_scale = travel_scale
        self.noise = noise
        self.gain = gain
        self.angle_scale = angle_scale
        self.goal = np.array([*GOAL_AGENT_POSITION, *GOAL_POSE], dtype=np.float32)
        self.contacts, self.normals = _outline_contacts(spacing)  # (C, 2) local points, outward unit normals
        self.com = np.array(_tee_com())  # local centre of mass
        self.gyration_sq = _tee_gyration_sq()
        self.contact: int | None = None
        self.placed = False  # the block is on its goal: the pusher heads to its own until the block is knocked off

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        state = np.asarray(obs["state"], dtype=np.float64)
        target = self._target(state[:2], state[2:5])
        if self.action_mode == "relative":
            action = target_to_relative_action(target, state[:2])
        else:
            action = target_to_action(target)
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, 2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _target(self, agent: np.ndarray, block: np.ndarray) -> np.ndarray:
        """The pusher's next target position (px)."""
        covered = coverage(block, GOAL_POSE)
        self.placed = covered > SUCCESS_COVERAGE + 0.02 or (self.placed and covered > PLACED_COVERAGE)
        if self.placed:  # the pusher goes to its goal position, giving the block a wide berth
            self.contact = None
            if np.linalg.norm(agent - GOAL_AGENT_POSITION) < 2.0:
                return agent  # done: hold still
            return self._waypoint(agent, GOAL_AGENT_POSITION, block, clearance=2 * STAND_OFF)
        rotation = _rotation(block[2])
        com = rotation @ self.com + block[:2]
        goal_com = _rotation(GOAL_POSE[2]) @ self.com + GOAL_POSE[:2]
        error = np.array([*(goal_com - com), self.angle_scale * _wrap(GOAL_POSE[2] - block[2])])
        points = self.contacts @ rotation.T + block[:2]  # (C, 2) world contact points
        normals = self.normals @ rotation.T  # (C, 2) outward
        scores = self._scores(points, normals, com, error)
        travel = np.linalg.norm(points + normals * (AGENT_RADIUS + STAND_OFF) - agent, axis=1)
        scores = scores - travel / self.travel_scale
        best = int(np.argmax(scores))
        if self.contact is None or scores[best] > scores[self.contact] + 0.1:
            self.contact = best
        point, normal = points[self.contact], normals[self.contact]
        offset = agent - point
        along, across = offset @ normal, abs(offset[0] * normal[1] - offset[1] * normal[0])
        if along > 0 and along < AGENT_RADIUS + STAND_OFF + 4.0 and across < 8.0:  # at the contact: push
            displacement = np.clip(self.gain * np.linalg.norm(error), 1.0, 25.0)
            return point + normal * (AGENT_RADIUS - displacement)
        return self._waypoint(agent, point + normal * (AGENT_RADIUS + STAND_OFF), block)

    def _scores(self, points: np.ndarray, normals: np.ndarray, com: np.ndarray, error: np.ndarray) -> np.ndarray:
        """Cosine between each contact's predicted motion and the pose error; -inf where the pusher can't stand."""
        direction = -normals  # (C, 2) pushing into the block
        arm = points - com
        turn = (arm[:, 0] * direction[:, 1] - arm[:, 1] * direction[:, 0]) / self.gyration_sq
        motion = np.concatenate([direction, self.angle_scale * turn[:, None]], axis=1)  # (C, 3)
        scores = motion @ error / (np.linalg.norm(motion, axis=1) * np.linalg.norm(error) + 1e-9)
        stand = points + normals * (AGENT_RADIUS + STAND_OFF)
        reachable = np.all((stand >= ARENA_LOW + AGENT_RADIUS) & (stand <= ARENA_HIGH - AGENT_RADIUS), axis=1)
        return np.where(reachable, scores, -np.inf)

    def _waypoint(
        self, agent: np.ndarray, stand_off: np.ndarray, block: np.ndarray, clearance: float = 0.0
    ) -> np.ndarray:
        """Straight to ``stand_off`` when that path is clear of the block (by ``clearance`` px more than the
        pusher's radius), else along a ring around it."""
        import shapely

        block_shape = tee_polygon(block)
        if not block_shape.buffer(AGENT_RADIUS + 1.0 + clearance).intersects(shapely.LineString([agent, stand_off])):
            return stand_off
        ring = block_shape.buffer(AGENT_RADIUS + 2 * STAND_OFF + clearance).exterior
        here, there = ring.project(shapely.Point(agent)), ring.project(shapely.Point(stand_off))
        if ring.distance(shapely.Point(agent)) > 2 * STAND_OFF:  # first onto the ring, at its nearest point
            return np.array(ring.interpolate(here).coords[0])
        forward = (there - here) % ring.length
        step = min(40.0, forward) if forward <= ring.length / 2 else -min(40.0, ring.length - forward)
        waypoint = np.array(ring.interpolate((here + step) % ring.length).coords[0])
        return np.clip(waypoint, ARENA_LOW + AGENT_RADIUS, ARENA_HIGH - AGENT_RADIUS)


def _rotation(angle: float) -> np.ndarray:
    return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])


def _wrap(angle: float) -> float:
    """Angle in [-π, π)."""
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


@functools.cache
def _tee_outline() -> shapely.Polygon:
    """The T's outline in local coordinates, counter-clockwise."""
    import shapely

    outline = shapely.union_all(list(tee_polygon(np.zeros(3)).geoms)).simplify(0.1)
    return shapely.geometry.polygon.orient(outline, sign=1.0)


def _tee_com() -> tuple[float, float]:
    """The block's centre of gravity in local coordinates, as the package sets it (it turns about this point)."""
    return tuple(_tee()[0].center_of_gravity)


def _tee_gyration_sq() -> float:
    """Squared radius of gyration about the centre of mass (uniform density), by sampling."""
    import shapely

    outline = _tee_outline()
    x0, y0, x1, y1 = outline.bounds
    xs, ys = np.meshgrid(np.arange(x0, x1, 2.0) + 1, np.arange(y0, y1, 2.0) + 1)
    inside = shapely.contains_xy(outline, xs, ys)
    cx, cy = _tee_com()
    return float(np.mean((xs[inside] - cx) ** 2 + (ys[inside] - cy) ** 2))


def _outline_contacts(spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``spacing`` px along the T's edges and their outward normals.

    Points whose stand-off disc would overlap the T itself (in the corners under the bar) are left out.
    """
    import shapely

    ring = np.array(_tee_outline().exterior.coords)  # counter-clockwise: outward normal is the edge turned right
    points, normals = [], []
    for start, end in zip(ring[:-1], ring[1:], strict=True):
        edge = end - start
        length = np.linalg.norm(edge)
        count = max(1, int(length // spacing))
        for fraction in (np.arange(count) + 0.5) / count:
            points.append(start + fraction * edge)
            normals.append(np.array([edge[1], -edge[0]]) / length)
    points, normals = np.array(points), np.array(normals)
    stand = points + normals * (AGENT_RADIUS + STAND_OFF)
    free = shapely.distance(_tee_outline(), shapely.points(stand)) >= AGENT_RADIUS
    return points[free], normals[free]


class PushTEvents(ImpossibleEvents):
    """Push-T's impossible events: the world teleports, or the T block turns from grey to red."""

    events = ("teleport", "colour_swap")
    swap_factor = "object_colour"
    swap_rgb = (0.86, 0.08, 0.24)  # crimson


class PushT(Task):
    """Push-T: push the T block onto a goal pose, by relative pusher targets, judged as published."""

    name = "pusht"
    version = "2"  # 2: relative actions by default, as published (1: absolute targets only)
    action_dim = 2
    state_dim = 5
    quantities = {"agent": (0, 1), "block": (2, 3), "block_angle": (4,)}  # LeWM's Push-T probes (REFERENCE.md)
    requires = ("gym-pusht",)
    success_tests = ("published", "coverage")
    events_class = PushTEvents
    camera_kind = "pixel"  # a top-down 2-D board: camera conditions warp the frames
    factors = {
        "agent_colour": Factor.colour("the pusher disc", AGENT_RGB),
        "object_colour": Factor.colour("the T block", BLOCK_RGB),
        "background_colour": Factor.colour("the board", BOARD_RGB),
    }
    default_history = 3  # LeWM
    default_frameskip = 5  # LeWM
    episode_steps = 200  # LeWM's Push-T episodes run ~196 steps

    def __init__(
        self,
        image_size: int = 96,  # the package's native observation size
        action_mode: str = "relative",  # stable-worldmodel PushT (relative=True), DINO-WM; or "absolute"
        success_test: str | None = None,
    ) -> None:
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {', '.join(ACTION_MODES)}, got {action_mode!r}")
        super().__init__(image_size=image_size, success_test=success_test, action_mode=action_mode)
        self.action_mode = action_mode

    def _new_env(self) -> PushTEnv:
        return PushTEnv(self.image_size, self.action_mode)

    def expert(self, rng: np.random.Generator, noise: float = 0.0) -> PushTExpert:
        return PushTExpert(rng, noise, self.action_mode)

    def success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        """``published``: pusher and block within 20 px (jointly) and the block within π/9 of the goal's angle.

        ``coverage``: the package's test, the block at ``state`` covering > 95% of the T placed at ``goal``.
        """
        if self.success_test == "coverage":
            return coverage(np.asarray(state)[2:5], np.asarray(goal)[2:5]) > SUCCESS_COVERAGE
        position_error, angle_error = pose_errors(state, goal)
        return position_error < POSITION_TOLERANCE and angle_error < ANGLE_TOLERANCE

    def distance(self, state: np.ndarray, goal: np.ndarray) -> float:
        """``published``: the larger of the test's two errors, each in units of its tolerance (below 1 passes).

        ``coverage``: the mean distance (px) between the T's 8 corners at the two block poses,
        which combines position and angle errors in one length: a shift by δ adds δ, a turn
        by θ about the centre adds about θ × the corners' mean distance from it (~60 px).
        """
        if self.success_test == "coverage":
            corners = tee_keypoints(np.asarray(state)[2:5]) - tee_keypoints(np.asarray(goal)[2:5])
            return float(np.mean(np.linalg.norm(corners, axis=1)))
        position_error, angle_error = pose_errors(state, goal)
        return max(position_error / POSITION_TOLERANCE, angle_error / ANGLE_TOLERANCE)
