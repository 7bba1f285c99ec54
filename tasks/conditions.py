"""Evaluation conditions: seeded perturbations of what is executed and what is seen.

A condition changes the world between the controller and the env (action noise,
sticky actions), in how the env renders its world (a moved camera, a factor of
variation) or between the env and the controller (a pixel-space camera warp, a
photometric shift); it never changes the cases, so a perturbed condition is always
paired with the clean one. Geometric camera changes are a real viewpoint change
where the env can move its camera (``TaskEnv.set_viewpoint``: the MuJoCo tasks), and a
pixel-space warp of the rendered frame otherwise (the 2-D top-down tasks).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange

from tasks.base import Task, TaskEnv
from tasks.factors import FACTORS, draw_factors


@dataclass(frozen=True)
class Condition:
    """A named, parameterised evaluation condition recorded in every result row.

    Every field's default means "unperturbed"; :attr:`name` lists the fields that differ,
    and a condition that perturbs one field lies on that field's axis, at its value.

    Camera fields mean one thing on a 2-D task (``Task.camera_kind == "pixel"``: the
    rendered frame is warped) and its physical counterpart on a 3-D one (``"viewpoint"``:
    the MuJoCo camera moves and the scene is rendered from there, with parallax), chosen so
    that the scene's centre moves alike in both:

    - ``camera_shift`` (pixels). 2-D: the frame translated ``shift`` px down and right,
      edges replicated. 3-D: the camera translated parallel to its image plane (left and
      up) by the distance that moves points at the depth of the scene's centre (where the
      optical axis meets the floor) ``shift`` px down and right; nearer points move more,
      farther ones less. At 64 px a pixel is ~1.3 cm of camera travel on Cube and ~1.0 cm
      on Reacher (the travel scales with 1 / frame size: ``shift`` px of a 224-px frame is less).
    - ``camera_rotate`` (degrees). 2-D: the frame turned counter-clockwise about its centre.
      3-D: the camera's azimuth — it orbits the scene's centre about the vertical axis by
      ``rotate`` degrees clockwise seen from above, so the floor turns counter-clockwise in
      the frame (for Reacher's top-down camera this is a turn about the optical axis,
      revealing what lies beyond the frame's corners, without parallax).
    - ``camera_zoom`` (a factor). 2-D: the frame scaled about its centre. 3-D: the camera
      dollied towards the scene's centre to 1/``zoom`` of its distance (a perspective
      change, not a field-of-view crop).

    Factors of variation (``agent_colour``, ``object_colour``, ``background_colour``,
    ``agent_size``, ``lighting``) are a strength in [0, 1] of a change of the task's own
    rendering: what each means in a task is its ``Task.factors`` declaration, and each case
    draws its value from its own seed (tasks/factors.py), so the change is paired with clean.
    A task that does not declare a factor refuses a condition that varies it (:meth:`check_task`).
    """

    action_noise: float = 0.0  # std of Gaussian noise added to each executed raw action
    camera_shift: float = 0.0  # pixels the scene's centre moves down and right (see above)
    # Sticky actions: with this probability the previous executed raw action repeats instead of
    # the new one (Machado et al., "Revisiting the ALE", JAIR 2018, recommend 0.25).
    sticky_prob: float = 0.0
    camera_rotate: float = 0.0  # degrees the view turns counter-clockwise (3-D: the camera's azimuth; see above)
    camera_zoom: float = 1.0  # above 1 zooms in (2-D: scale about the centre; 3-D: the camera moves closer)
    brightness: float = 0.0  # relative change of intensity: frames × (1 + brightness)
    hue: float = 0.0  # hue rotation as a fraction of the colour circle, in [-0.5, 0.5]
    # Factors of variation, each a strength in [0, 1] (tasks/factors.py; what they change: Task.factors).
    agent_colour: float = 0.0
    object_colour: float = 0.0
    background_colour: float = 0.0
    agent_size: float = 0.0
    lighting: float = 0.0

    def __post_init__(self) -> None:
        # Messages name the bare field: a sweep's loader prefixes the condition's place (``conditions[1].``).
        problems = []  # every bad field, one line each: the sweep loader reports them all at once
        if not 0 <= self.action_noise < math.inf:
            problems.append(f"action_noise must be a non-negative, finite std, got {self.action_noise}")
        for name in ("camera_shift", "camera_rotate"):  # any finite shift or turn; check_trial bounds the shift
            if not math.isfinite(getattr(self, name)):
                problems.append(f"{name} must be a finite number, got {getattr(self, name)}")
        if not 0 <= self.sticky_prob < 1:
            problems.append(f"sticky_prob must be a probability in [0, 1), got {self.sticky_prob}")
        if not 0 < self.camera_zoom < math.inf:
            problems.append(f"camera_zoom must be a positive, finite scale, got {self.camera_zoom}")
        if not -1 < self.brightness < math.inf:
            problems.append(
                f"brightness must be above -1 (a factor 1 + brightness > 0) and finite, got {self.brightness}"
            )
        if not -0.5 <= self.hue <= 0.5:
            problems.append(f"hue must be a fraction of the colour circle in [-0.5, 0.5], got {self.hue}")
        for factor in FACTORS:  # which factors a task has is checked against the task (check_task)
            if not 0 <= getattr(self, factor) <= 1:
                problems.append(f"{factor} must be a strength in [0, 1], got {getattr(self, factor)}")
        if problems:
            raise ValueError("\n".join(problems))

    @property
    def name(self) -> str:
        """``clean``, or the perturbed fields, e.g. ``action_noise=0.2,camera_rotate=10``."""
        parts = [f"{key}={value:g}" for key, value in self.params().items() if value != _DEFAULTS[key]]
        return ",".join(parts) or "clean"

    @property
    def perturbed(self) -> dict[str, float]:
        """The fields that differ from their unperturbed default, by name."""
        return {key: value for key, value in self.params().items() if value != _DEFAULTS[key]}

    @property
    def axis(self) -> str:
        """The one field this condition perturbs; ``clean`` when none, ``combined`` when several."""
        perturbed = self.perturbed
        return next(iter(perturbed)) if len(perturbed) == 1 else "combined" if perturbed else "clean"

    @property
    def magnitude(self) -> float | None:
        """The perturbed field's value on a single axis; None for the clean and combined conditions."""
        perturbed = self.perturbed
        return next(iter(perturbed.values())) if len(perturbed) == 1 else None

    def params(self) -> dict[str, float]:
        """Every field by name, for result rows and replayable cases."""
        return dataclasses.asdict(self)

    @property
    def moves_camera(self) -> bool:
        return bool(self.camera_shift or self.camera_rotate or self.camera_zoom != 1.0)

    @property
    def factors(self) -> dict[str, float]:
        """The factors of variation this condition varies, by name, with their strengths."""
        return {name: getattr(self, name) for name in FACTORS if getattr(self, name)}

    def check_task(self, task: Task | type[Task]) -> None:
        """Raise ValueError, naming the factor and the task's own, if this condition varies a factor ``task``
        does not declare (``Task.factors``); a trial calls it before it collects or trains anything."""
        unknown = [name for name in self.factors if name not in task.factors]
        if unknown:
            raise ValueError(
                f"condition {self.name!r} varies {unknown[0]}, which task {task.name!r} does not declare; "
                f"its factors: {', '.join(task.factors) or 'none'}"
            )

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

    def stage(self, task: Task, env: TaskEnv, case_seed: int) -> Condition:
        """Set up ``env`` for one case under this condition; returns the condition still to apply to its frames.

        The factors of variation are drawn for the case (from ``case_seed``: paired across
        strengths, conditions and models) and rendered by the env; the camera is moved by
        :meth:`place_camera`. Call it after the env's reset and before its first observation.
        """
        self.check_task(task)
        if self.factors:
            env.set_factors(draw_factors(task.factors, self.factors, case_seed))
        return self.place_camera(env)

    def place_camera(self, env: TaskEnv) -> Condition:
        """Move ``env``'s own camera where it has one; returns the condition still to apply to its frames.

        An env whose :meth:`TaskEnv.set_viewpoint` moves its camera renders the moved view
        itself (a real viewpoint change, with parallax); any other env's frames are warped
        by :meth:`observe`.
        """
        if not self.moves_camera or not env.set_viewpoint(self.camera_shift, self.camera_rotate, self.camera_zoom):
            return self
        return dataclasses.replace(self, camera_shift=0.0, camera_rotate=0.0, camera_zoom=1.0)

    def observe(self, pixels: np.ndarray) -> np.ndarray:
        """Frames (..., H, W, 3) uint8 as the moved camera sees them: warped, translated, then recoloured.

        Factors of variation are rendered by the env (:meth:`stage`), never applied here.
        """
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
    import torchvision.transforms.v2.functional as TF  # here, not above: torchvision's import costs every process ~3 s

    images = rearrange(torch.from_numpy(np.ascontiguousarray(pixels)), "... h w c -> ... c h w")
    if brightness:
        images = TF.adjust_brightness(images, 1.0 + brightness)
    if hue:
        images = TF.adjust_hue(images, hue)
    return rearrange(images, "... c h w -> ... h w c").numpy()
