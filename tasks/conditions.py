"""Evaluation conditions and impossible events: seeded perturbations of what is executed and what is seen.

A condition changes the world between the controller and the env (action noise,
sticky actions) or between the env and the controller (a moved camera, a
photometric shift); it never changes the cases, so a perturbed condition is always
paired with the clean one. Geometric camera changes are a real viewpoint change
where the env has a camera it can move (:class:`MovableCamera`), and a pixel-space
warp of the rendered frame otherwise (2-D top-down tasks).

Impossible events (:class:`ImpossibleEvents`) edit a recorded sequence at a known
frame — the agent teleports, vanishes, changes colour or passes through a wall —
and re-render it, for the violation-of-expectation test (harness/surprise.py).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from einops import rearrange

from tasks.base import Task, TaskEnv
from tasks.two_room import AGENT_RGB, TwoRoomRenderer


@dataclass(frozen=True)
class Condition:
    """A named, parameterised evaluation condition recorded in every result row.

    Every field's default means "unperturbed"; :attr:`name` lists the fields that differ.
    """

    action_noise: float = 0.0  # std of Gaussian noise added to each executed raw action
    camera_shift: float = 0.0  # view translation in pixels (2-D tasks: a shifted crop of the frame)
    # Sticky actions: with this probability the previous executed raw action repeats instead of
    # the new one (Machado et al., "Revisiting the ALE", JAIR 2018, recommend 0.25).
    sticky_prob: float = 0.0
    camera_rotate: float = 0.0  # degrees the view turns counter-clockwise about the frame's centre
    camera_zoom: float = 1.0  # scale about the frame's centre; above 1 zooms in
    brightness: float = 0.0  # relative change of intensity: frames × (1 + brightness)
    hue: float = 0.0  # hue rotation as a fraction of the colour circle, in [-0.5, 0.5]

    def __post_init__(self) -> None:
        if not self.action_noise >= 0:
            raise ValueError(f"action_noise must be a non-negative std, got {self.action_noise}")
        if not 0 <= self.sticky_prob < 1:
            raise ValueError(f"sticky_prob must be a probability in [0, 1), got {self.sticky_prob}")
        if not self.camera_zoom > 0:
            raise ValueError(f"camera_zoom must be a positive scale, got {self.camera_zoom}")
        if not self.brightness > -1:
            raise ValueError(f"brightness must be above -1 (a factor 1 + brightness > 0), got {self.brightness}")
        if not -0.5 <= self.hue <= 0.5:
            raise ValueError(f"hue must be a fraction of the colour circle in [-0.5, 0.5], got {self.hue}")

    @property
    def name(self) -> str:
        """``clean``, or the perturbed fields, e.g. ``action_noise=0.2,camera_rotate=10``."""
        parts = [f"{key}={value:g}" for key, value in self.params().items() if value != _DEFAULTS[key]]
        return ",".join(parts) or "clean"

    def params(self) -> dict[str, float]:
        """Every field by name, for result rows and replayable cases."""
        return dataclasses.asdict(self)

    @property
    def moves_camera(self) -> bool:
        return bool(self.camera_shift or self.camera_rotate or self.camera_zoom != 1.0)

    # --- what is executed ------------------------------------------------------------------

    def execute(self, action: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The action the env actually receives, clipped to the action space (memoryless conditions only).

        Sticky actions need the previous executed action: use :meth:`channel` for them.
        """
        if self.sticky_prob:
            raise ValueError(f"condition {self.name!r} has sticky actions; execute through Condition.channel(rng)")
        return self._execute(action, rng, None)

    def channel(self, rng: np.random.Generator) -> ActionChannel:
        """One episode's actuator under this condition; it remembers the last executed action."""
        return ActionChannel(self, rng)

    def _execute(self, action: np.ndarray, rng: np.random.Generator, previous: np.ndarray | None) -> np.ndarray:
        # The sticky draw comes first and only when stickiness is on, so conditions without it
        # draw exactly the noise they always drew (paired across versions of the harness).
        if self.sticky_prob and previous is not None and rng.random() < self.sticky_prob:
            return previous.copy()
        if self.action_noise:
            action = action + rng.normal(0.0, self.action_noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    # --- what is seen ------------------------------------------------------------------------

    def place_camera(self, env: TaskEnv) -> Condition:
        """Move ``env``'s own camera where it has one; returns the condition still to apply to its frames.

        An env with :class:`MovableCamera` renders the moved view itself (a real viewpoint
        change, with parallax); any other env's frames are warped by :meth:`observe`.
        """
        if not self.moves_camera or not isinstance(env, MovableCamera):
            return self
        env.set_viewpoint(self.camera_shift, self.camera_rotate, self.camera_zoom)
        return dataclasses.replace(self, camera_shift=0.0, camera_rotate=0.0, camera_zoom=1.0)

    def observe(self, pixels: np.ndarray) -> np.ndarray:
        """Frames (..., H, W, 3) uint8 as the moved camera sees them: warped, translated, then recoloured."""
        if self.camera_rotate or self.camera_zoom != 1.0:
            pixels = rotate_zoom(pixels, self.camera_rotate, self.camera_zoom)
        if int(round(self.camera_shift)):
            pixels = translate(pixels, self.camera_shift)
        if self.brightness or self.hue:
            pixels = photometric(pixels, self.brightness, self.hue)
        return pixels


_DEFAULTS = {field.name: field.default for field in dataclasses.fields(Condition)}
AXES = tuple(_DEFAULTS)


class ActionChannel:
    """The actuator of one episode under a condition: noise, and the memory sticky actions need."""

    def __init__(self, condition: Condition, rng: np.random.Generator) -> None:
        self.condition, self.rng = condition, rng
        self.previous: np.ndarray | None = None  # the last executed raw action (none before the first)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        self.previous = self.condition._execute(action, self.rng, self.previous)
        return self.previous


@runtime_checkable
class MovableCamera(Protocol):
    """Optional hook for envs with a real camera (MuJoCo tasks): move it before the episode's first render.

    ``shift``: translate the camera so the scene's ground plane moves about ``shift`` pixels
    down and right in the frame (as the 2-D fallback does); ``rotate``: turn the view
    counter-clockwise by that many degrees (for a tilted camera, the azimuth about the
    scene's centre); ``zoom``: divide the camera's distance (or field of view) by it.
    Zero, zero and one restore the task's default view.
    """

    def set_viewpoint(self, shift: float, rotate: float, zoom: float) -> None: ...


def degradation_conditions(axis: str, magnitudes: list[float]) -> list[Condition]:
    """One condition per magnitude along one axis, e.g. ``("action_noise", [0, 0.1, 0.2, 0.4])``."""
    if axis not in AXES:
        raise ValueError(f"unknown condition axis {axis!r}; axes: {', '.join(AXES)}")
    return [Condition(**{axis: float(magnitude)}) for magnitude in magnitudes]


def translate(pixels: np.ndarray, shift: float) -> np.ndarray:
    """Frames (..., H, W, 3) translated diagonally by ``round(shift)`` pixels, edges replicated."""
    shift = int(round(shift))
    height, width = pixels.shape[-3:-1]
    pad = [(0, 0)] * (pixels.ndim - 3) + [(abs(shift), abs(shift))] * 2 + [(0, 0)]
    padded = np.pad(pixels, pad, mode="edge")
    top = abs(shift) - shift  # a positive shift moves the content down and right
    return padded[..., top : top + height, top : top + width, :]


def rotate_zoom(pixels: np.ndarray, degrees: float, zoom: float) -> np.ndarray:
    """Frames (..., H, W, 3) uint8 turned ``degrees`` counter-clockwise and scaled by ``zoom`` about the centre.

    Bilinear resampling with the border replicated (like :func:`translate`), so no
    black corners appear that the clean frames never had.
    """
    height, width = pixels.shape[-3:-1]
    cy, cx = (height - 1) / 2, (width - 1) / 2
    rows, cols = np.meshgrid(np.arange(height) - cy, np.arange(width) - cx, indexing="ij")  # (H, W) each
    # Inverse map: the source of each output pixel. Rows grow downwards, so a counter-clockwise
    # turn on screen is a clockwise one in (col, row) coordinates.
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    source_col = (cos * cols - sin * rows) / zoom + cx
    source_row = (sin * cols + cos * rows) / zoom + cy
    source_row, source_col = np.clip(source_row, 0, height - 1), np.clip(source_col, 0, width - 1)
    top, left = np.floor(source_row).astype(np.int64), np.floor(source_col).astype(np.int64)
    bottom, right = np.minimum(top + 1, height - 1), np.minimum(left + 1, width - 1)
    fy, fx = (source_row - top)[..., None], (source_col - left)[..., None]  # (H, W, 1)
    image = pixels.astype(np.float32)
    upper = image[..., top, left, :] * (1 - fx) + image[..., top, right, :] * fx
    lower = image[..., bottom, left, :] * (1 - fx) + image[..., bottom, right, :] * fx
    return np.clip(upper * (1 - fy) + lower * fy + 0.5, 0, 255).astype(np.uint8)


def photometric(pixels: np.ndarray, brightness: float, hue: float) -> np.ndarray:
    """Frames (..., H, W, 3) uint8 with intensity × (1 + brightness) and hue turned by ``hue`` of a circle."""
    images = rearrange(torch.from_numpy(np.ascontiguousarray(pixels)), "... h w c -> ... c h w")
    if brightness:
        images = TF.adjust_brightness(images, 1.0 + brightness)
    if hue:
        images = TF.adjust_hue(images, hue)
    return rearrange(images, "... c h w -> ... h w c").numpy()


# --- impossible events ------------------------------------------------------------------------

EVENTS = ("teleport", "vanish", "colour_swap", "pass_through_wall")


class ImpossibleEvents:
    """Impossible events for any task: a teleport, by placing the world at a far-away state.

    A sequence is ``states`` (T, S) and the raw ``actions`` (T-1, frameskip, A) between
    frames ``frameskip`` steps apart. A state event puts the world at an edited state at
    frame ``step`` and lets it evolve under its true dynamics from there with the recorded
    actions, so only the transition into ``step`` is impossible; a pixel event edits the
    frames from ``step`` on. Subclasses add task-specific events.
    """

    events: tuple[str, ...] = ("teleport",)
    teleport_candidates = 16  # far-away states considered per teleport; the farthest is taken

    def __init__(self, task: Task, pool: np.ndarray) -> None:
        self.task = task
        self.pool = pool  # (P, S) states of other sequences, where teleports may land

    def choose_step(self, event: str, states: np.ndarray, low: int, high: int, rng: np.random.Generator) -> int | None:
        """The frame the event happens at, in [low, high]; None when this sequence cannot host it."""
        return int(rng.integers(low, high + 1)) if low <= high else None

    def inject(
        self,
        event: str,
        frames: np.ndarray,
        states: np.ndarray,
        actions: np.ndarray,
        step: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """The impossible twin of clean ``frames`` (T, H, W, 3): identical before ``step``, edited from it on."""
        if event not in self.events:
            raise ValueError(f"task {self.task.name!r} has no {event!r} event; it has: {', '.join(self.events)}")
        twin = frames.copy()
        edited = self.edit_pixels(event, frames[step:], states[step:], rng)
        if edited is not None:
            twin[step:] = edited
            return twin
        jumped = self.jump(event, states, step, rng)
        twin[step:] = self.render(self.evolve(jumped, actions[step:]))
        return twin

    def jump(self, event: str, states: np.ndarray, step: int, rng: np.random.Generator) -> np.ndarray:
        """The state the world is put in at ``step`` for a state event."""
        candidates = self.pool[rng.integers(len(self.pool), size=self.teleport_candidates)]
        distances = [self.task.distance(states[step], candidate) for candidate in candidates]
        return candidates[int(np.argmax(distances))]

    def edit_pixels(
        self, event: str, frames: np.ndarray, states: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray | None:
        """Edited frames for a pixel event; None for a state event."""
        return None

    def evolve(self, start: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """States (1 + len(actions), S) from ``start`` under the true dynamics, one per action block."""
        env = self.task.make_env(seed=0)
        try:
            env.set_state(start)
            states = [start]
            for block in actions:  # (frameskip, A)
                for action in block:
                    env.step(action)
                states.append(env.get_state())
        finally:
            env.close()
        return np.stack(states).astype(np.float32)

    def render(self, states: np.ndarray) -> np.ndarray:
        """Frames (T, H, W, 3) of states (T, S), each placed by ``set_state``."""
        env = self.task.make_env(seed=0)
        try:
            return np.stack([env.set_state(state)["pixels"] for state in states])
        finally:
            env.close()


class TwoRoomEvents(ImpossibleEvents):
    """Two-Room's impossible events: the agent teleports within its room, vanishes, turns blue,
    or appears mirrored on the other side of the wall, away from the door."""

    events = EVENTS
    swapped_rgb = np.array([40, 90, 220], dtype=np.float32)  # the agent turns from red to blue
    teleport_min_distance = 0.25  # of the world's width: "far" compared with 5 units per frame
    wall_reach = 0.2  # of the world's width: how close to the wall a pass-through may start

    def __init__(self, task: Task, pool: np.ndarray) -> None:
        super().__init__(task, pool)
        self.geometry = task.geometry
        self.renderer = TwoRoomRenderer(task.geometry, task.image_size)

    def choose_step(self, event: str, states: np.ndarray, low: int, high: int, rng: np.random.Generator) -> int | None:
        if event != "pass_through_wall":
            return super().choose_step(event, states, low, high, rng)
        # Pass through where the agent comes nearest the wall while not level with the door.
        g = self.geometry
        steps = np.arange(low, high + 1)
        x, y = states[steps, 0], states[steps, 1]
        beside_door = (y >= g.door_low) & (y <= g.door_high)
        gap = np.where(beside_door, np.inf, np.abs(x - g.world_size / 2))
        if not len(steps) or gap.min() > self.wall_reach * g.world_size:
            return None
        return int(steps[np.argmin(gap)])

    def jump(self, event: str, states: np.ndarray, step: int, rng: np.random.Generator) -> np.ndarray:
        g, here = self.geometry, states[step]
        if event == "pass_through_wall":
            return np.array([g.world_size - here[0], here[1]], dtype=np.float32)  # mirrored across the wall
        # Teleport: the farthest of a few free positions in the same room.
        candidates = g.sample_free(rng, 4 * self.teleport_candidates)
        same_room = (candidates[:, 0] < g.world_size / 2) == (here[0] < g.world_size / 2)
        candidates = candidates[same_room]
        distances = np.linalg.norm(candidates - here, axis=-1)
        if distances.max() < self.teleport_min_distance * g.world_size:
            raise RuntimeError("no far position found in the agent's room; the room is too small for a teleport")
        return candidates[int(np.argmax(distances))]

    def edit_pixels(
        self, event: str, frames: np.ndarray, states: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray | None:
        background = self.renderer.background  # (H, W, 3) float32: the frame without the agent
        if event == "vanish":
            return np.repeat(self.renderer.background_uint8[None], len(frames), axis=0)
        if event == "colour_swap":
            # Each pixel is background·(1 − α) + agent·α; recover α and blend the new colour instead.
            difference = AGENT_RGB - background  # (H, W, 3)
            alpha = ((frames - background) * difference).sum(-1) / (difference * difference).sum(-1)  # (T, H, W)
            alpha = np.clip(alpha, 0.0, 1.0)[..., None]
            return (background * (1 - alpha) + self.swapped_rgb * alpha + 0.5).astype(np.uint8)
        return None

    def render(self, states: np.ndarray) -> np.ndarray:
        return self.task.render(states)


EVENT_SETS: dict[str, type[ImpossibleEvents]] = {"two_room": TwoRoomEvents}


def impossible_events(task: Task, pool: np.ndarray) -> ImpossibleEvents:
    """The task's impossible events (a teleport for any task; more where the task has its own set)."""
    return EVENT_SETS.get(task.name, ImpossibleEvents)(task, pool)
