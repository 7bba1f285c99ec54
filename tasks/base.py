"""The Task contract: what every environment in wmbench offers the harness.

A task is a small factory around a Gymnasium env. Observations are a dict with
``pixels`` (uint8, H×W×3) and ``state`` (float32 ground truth, read only by the
evaluator, probes and data collection — never by a planner). Actions are a Box
in [-1, 1]. A task declares the pip distributions it needs (``requires``), its
impossible events (``events_class``), its factors of variation (``factors``) and what
kind of camera change its env renders (``camera_kind``), so a new task is one file plus
one line in ``TASKS``; tasks are built with :func:`make_task`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from abc import ABC, ABCMeta, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import metadata
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np

from tasks.events import ImpossibleEvents
from tasks.factors import Factor

# One line per task: name -> "module:Class". Imported on first use; a task module imports its
# optional packages lazily, so its class (and its ``requires``) is there even when they are not.
TASKS: dict[str, str] = {
    "two_room": "tasks.two_room:TwoRoom",
    "pusht": "tasks.pusht:PushT",
    "cube": "tasks.cube:Cube",
    "reacher": "tasks.reacher:Reacher",
}

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]
"""Maps one observation dict to one action in [-1, 1]^action_dim."""


_PLANNING: ContextVar[bool] = ContextVar("wmbench_planning", default=False)


class StateLeakError(RuntimeError):
    """Planning code read the simulator's true state or success signal."""


@contextmanager
def planning_guard() -> Iterator[None]:
    """Inside this block any read of true state, success or the simulator raises StateLeakError.

    The evaluator wraps every planning call of a model controller in it, so a planner
    cannot, even by accident, read what only the evaluator may (DESIGN.md, "Evaluation integrity").
    """
    token = _PLANNING.set(True)
    try:
        yield
    finally:
        _PLANNING.reset(token)


def refuse_during_planning(what: str) -> None:
    """Raise StateLeakError naming ``what`` inside :func:`planning_guard`; for guards kept per instance."""
    if _PLANNING.get():
        raise StateLeakError(f"{what} was called during planning; planners see only pixels and their own actions")


def _guarded(method: Callable) -> Callable:
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        refuse_during_planning(method.__qualname__)
        return method(*args, **kwargs)

    return guarded


def _guard_methods(cls: type, names: tuple[str, ...]) -> None:
    for name in names:
        if name in cls.__dict__:
            setattr(cls, name, _guarded(cls.__dict__[name]))


def missing_packages(packages: Iterable[str]) -> list[str]:
    """The pip distributions among ``packages`` that are not installed here."""
    missing = []
    for package in packages:
        try:
            metadata.version(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
    return missing


class TaskEnv(gym.Env, metaclass=ABCMeta):
    """A Gymnasium env that can also be placed at, and read from, an exact state.

    The base owns what every task's env shares: the spaces, reset (a seeded random start,
    or ``options["state"]``), the action check of ``step``, and the last observed frame
    that ``render`` returns. A subclass draws its start (:meth:`_start`), steps
    (:meth:`_step`), places and reads the state. State access is guarded: it raises
    inside :func:`planning_guard`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard_methods(cls, ("reset", "step", "set_state", "get_state"))

    def __init__(self, image_size: int, action_dim: int, state_space: gym.spaces.Box) -> None:
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(action_dim,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict(
            {
                "pixels": gym.spaces.Box(0, 255, shape=(image_size, image_size, 3), dtype=np.uint8),
                "state": state_space,
            }
        )
        self._pixels: np.ndarray | None = None  # (H, W, 3) uint8: the frame last observed

    @_guarded
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict]:
        """The task's random start drawn from ``seed``, then placed at ``options["state"]`` when one is given."""
        super().reset(seed=seed)
        obs = self._start(seed)
        state = (options or {}).get("state")
        return (obs if state is None else self.set_state(state)), {}

    @_guarded
    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """One raw step; episodes never end by themselves (no goal lives in the env, the caller sets the length)."""
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape} with values in [-1, 1], got shape {action.shape}"
            )
        obs, reward, info = self._step(np.clip(action, -1.0, 1.0))  # the actuator's box: planners do not clamp
        return obs, reward, False, False, info

    @abstractmethod
    def _start(self, seed: int | None) -> dict[str, np.ndarray]:
        """Draw the task's random start (``self.np_random`` is already seeded) and observe it."""

    @abstractmethod
    def _step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, dict[str, Any]]:
        """Apply one checked action (float32, action_space's shape): (observation, reward, info)."""

    @abstractmethod
    def set_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Place the world at ``state`` and return the observation there."""

    @abstractmethod
    def get_state(self) -> np.ndarray:
        """The current ground-truth state (float32)."""

    def render(self) -> np.ndarray:
        return self.render_pixels()

    def render_pixels(self) -> np.ndarray:
        """The current frame as uint8 H×W×3: the one the last reset, step or set_state observed."""
        if self._pixels is None:
            raise RuntimeError(f"reset the {type(self).__name__} before rendering it")
        return self._pixels.copy()

    def set_viewpoint(self, shift: float, rotate: float, zoom: float) -> bool:
        """Move the env's own camera, from the next observation on; False when it has none.

        An env with a real camera (the MuJoCo tasks: ``Task.camera_kind == "viewpoint"``)
        renders the moved view itself and returns True; ``Condition.place_camera`` then
        warps nothing. The default has no movable camera: it returns False and the frames
        are warped in pixel space instead. What the three numbers mean for a real camera is
        documented on :class:`tasks.conditions.Condition` (``camera_shift``, ``camera_rotate``,
        ``camera_zoom``); zero, zero and one restore the task's default view exactly. The view
        stays until it is set again (a reset does not move the camera back).
        """
        return False

    def factor_values(self) -> dict[str, np.ndarray]:
        """The value each factor of variation the env renders with has now (``Task.factors``' names)."""
        return {}

    def set_factors(self, values: Mapping[str, np.ndarray]) -> None:
        """Render with these factor values (name -> value, as :meth:`tasks.factors.Factor.value` gives) from
        the next observation on; the values stay until set again (a reset keeps them)."""
        known = self.factor_values()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no factor of variation {unknown[0]!r}; its factors: "
                f"{', '.join(known) or 'none'}"
            )
        self._set_factors({name: np.asarray(value, dtype=np.float64) for name, value in values.items()})

    def _set_factors(self, values: dict[str, np.ndarray]) -> None:
        """Apply checked factor values (an env with factors overrides this and :meth:`factor_values`)."""

    def _observe(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """The observation of the world as it stands, with ``pixels`` its frame (kept for ``render``)."""
        self._pixels = np.asarray(pixels, dtype=np.uint8)
        return {"pixels": self._pixels.copy(), "state": self.get_state()}


class Task(ABC):
    """A named task: env factory, data policies, success tests, packages, impossible events and variation.

    A task offers one or more named success tests (``success_tests``): ``"published"`` is
    the test of the authors' evaluation behind the published numbers; others are named for
    what they measure (e.g. Push-T's ``"coverage"``). ``success`` and ``distance`` judge by
    the test the task was built with (``success_test``; None: the first listed). The test is
    not part of ``config()``: the data do not change with the criterion, so cache keys must not.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"  # bump when dynamics or rendering change: keys caches
    action_dim: ClassVar[int]
    state_dim: ClassVar[int]
    # Named groups of state dims the probes report one by one (LeWM probes agent, block, angle); {}: one, "state".
    quantities: ClassVar[dict[str, tuple[int, ...]]] = {}
    # The pip distributions the task needs, e.g. ("dm-control", "mujoco"); result rows record their versions.
    requires: ClassVar[tuple[str, ...]]
    events_class: ClassVar[type[ImpossibleEvents]] = ImpossibleEvents  # the task's impossible events
    # Declared by every task (no default, so a new task must say): its factors of variation, by condition field
    # (tasks.factors.FACTORS; {} for none), and whether its env moves a real camera ("viewpoint": MuJoCo
    # scenes, with parallax) or a camera condition warps its frames ("pixel": top-down 2-D worlds).
    factors: ClassVar[dict[str, Factor]]
    camera_kind: ClassVar[Literal["viewpoint", "pixel"]]
    # The success tests offered, by name; the first is the default. "published": the authors' evaluation's.
    success_tests: ClassVar[tuple[str, ...]] = ("published",)
    # Published defaults the protocol presets read (REFERENCE.md, LeWM).
    default_history: ClassVar[int] = 3
    default_frameskip: ClassVar[int] = 5
    episode_steps: ClassVar[int] = 100  # raw env steps per collected episode

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard_methods(cls, ("success", "distance", "simulate"))

    def __init__(self, image_size: int = 64, success_test: str | None = None, **options: Any) -> None:
        self.require()
        if not (isinstance(image_size, int) and image_size >= 8):
            raise ValueError(f"image_size must be an integer of at least 8 pixels, got {image_size!r}")
        if success_test is not None and success_test not in self.success_tests:
            raise ValueError(
                f"success_test {success_test!r} is not a test of task {self.name!r}; "
                f"known tests: {', '.join(self.success_tests)}"
            )
        self.image_size = image_size
        self.success_test: str = self.success_tests[0] if success_test is None else success_test
        self.options = options  # what config() records: success_test is not among them

    @classmethod
    def require(cls) -> None:
        """Raise ImportError, in one sentence naming the task and the pip command, if a required package is missing."""
        missing = missing_packages(cls.requires)
        if missing:
            raise ImportError(
                f"task {cls.name!r} needs packages that are not installed ({', '.join(missing)}); "
                f"install them with: pip install {' '.join(missing)} (or pip install -e '.[tasks]')"
            )

    def config(self) -> dict[str, Any]:
        """Everything that changes what the env produces; hashed into cache keys."""
        return {"task": self.name, "version": self.version, "image_size": self.image_size, **self.options}

    def make_env(self, seed: int | None = None) -> TaskEnv:
        """A fresh env, reset with ``seed`` when one is given (else reset it before use)."""
        env = self._new_env()
        if seed is not None:
            env.reset(seed=seed)
        return env

    @abstractmethod
    def _new_env(self) -> TaskEnv:
        """A fresh env of this task, not yet reset."""

    @abstractmethod
    def expert(self, rng: np.random.Generator, noise: float = 0.0) -> Policy:
        """A scripted expert policy with Gaussian action noise of std ``noise``."""

    def random_policy(self, rng: np.random.Generator) -> Policy:
        """Uniform actions in [-1, 1]."""
        return lambda obs: rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)

    @abstractmethod
    def success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        """Whether ``state`` meets the task's success test (``self.success_test``) for ``goal``."""

    @abstractmethod
    def distance(self, state: np.ndarray, goal: np.ndarray) -> float:
        """Distance to the goal in true state space, as ``self.success_test`` measures it (final_distance)."""

    @_guarded
    def simulate(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray | None:
        """Batched true dynamics (N, S) × (N, A) -> (N, S), for the oracle; None if unavailable."""
        return None


def make_task(name: str, **options: Any) -> Task:
    """Build a registered task by name; unknown names raise with the list of known ones."""
    return task_class(name)(**options)


TASK_ENTRY_POINTS = "wmbench.tasks"  # installed packages register "name = package.module:TaskClass"


def task_path(name: str) -> str | None:
    """``module:Class`` for a registered name, an import path or an installed entry point; None otherwise."""
    if name in TASKS:
        return TASKS[name]
    if ":" in name:
        return name
    registered = {point.name: point.value for point in importlib.metadata.entry_points(group=TASK_ENTRY_POINTS)}
    return registered.get(name)


def task_class(name: str) -> type[Task]:
    """The task class of ``name`` (imported on first use): a registry name, an import path
    ``package.module:TaskClass`` or a ``wmbench.tasks`` entry point; unknown names raise with the known ones."""
    path = task_path(name)
    if path is None:
        raise ValueError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}, "
            f"an import path 'package.module:TaskClass', or an entry point of group {TASK_ENTRY_POINTS!r}"
        )
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:  # a task module that imports a missing package at its top (e.g. from outside)
        raise ImportError(
            f"task {name!r} could not be imported: {error.name or error} is missing; "
            f"install the task's packages, e.g. pip install -e '.[tasks]'"
        ) from error
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ValueError(f"task {name!r}: {path!r} is not a Task subclass (tasks/base.py)")
    return cls
