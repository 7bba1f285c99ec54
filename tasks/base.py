"""The Task contract: what every environment in wmbench offers the harness.

A task is a small factory around a Gymnasium env. Observations are a dict with
``pixels`` (uint8, H×W×3) and ``state`` (float32 ground truth, read only by the
evaluator, probes and data collection — never by a planner). Actions are a Box
in [-1, 1]. Tasks are named in ``TASKS`` and built with :func:`make_task`.
"""

from __future__ import annotations

import functools
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

# One line per task: name -> "module:Class". Imported lazily so that a missing
# optional extra (gym-pusht, ogbench) only matters when that task is used.
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


def _guarded(method: Callable) -> Callable:
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _PLANNING.get():
            raise StateLeakError(
                f"{method.__qualname__} was called during planning; planners see only pixels and their own actions"
            )
        return method(*args, **kwargs)

    return guarded


def _guard_methods(cls: type, names: tuple[str, ...]) -> None:
    for name in names:
        if name in cls.__dict__:
            setattr(cls, name, _guarded(cls.__dict__[name]))


class TaskEnv(gym.Env):
    """A Gymnasium env that can also be placed at, and read from, an exact state.

    Every subclass's state access is guarded: it raises inside :func:`planning_guard`.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard_methods(cls, ("reset", "step", "set_state", "get_state"))

    @abstractmethod
    def set_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Place the world at ``state`` and return the observation there."""

    @abstractmethod
    def get_state(self) -> np.ndarray:
        """The current ground-truth state (float32)."""

    def render_pixels(self) -> np.ndarray:
        """The current frame as uint8 H×W×3."""
        return self._get_obs()["pixels"]


class Task(ABC):
    """A named task: env factory, data policies, success test and eval cases."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"  # bump when dynamics or rendering change: keys caches
    action_dim: ClassVar[int]
    state_dim: ClassVar[int]
    # Published defaults the protocol presets read (REFERENCE.md, LeWM).
    default_history: ClassVar[int] = 3
    default_frameskip: ClassVar[int] = 5
    episode_steps: ClassVar[int] = 100  # raw env steps per collected episode

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _guard_methods(cls, ("success", "distance", "simulate", "sample_eval_case"))

    def __init__(self, image_size: int = 64, **options: Any) -> None:
        if not (isinstance(image_size, int) and image_size >= 8):
            raise ValueError(f"image_size must be an integer of at least 8 pixels, got {image_size!r}")
        self.image_size = image_size
        self.options = options

    def config(self) -> dict[str, Any]:
        """Everything that changes what the env produces; hashed into cache keys."""
        return {"task": self.name, "version": self.version, "image_size": self.image_size, **self.options}

    @abstractmethod
    def make_env(self, seed: int | None = None) -> TaskEnv:
        """A fresh env (reset it before use)."""

    @abstractmethod
    def expert(self, rng: np.random.Generator, noise: float = 0.0) -> Policy:
        """A scripted expert policy with Gaussian action noise of std ``noise``."""

    def random_policy(self, rng: np.random.Generator) -> Policy:
        """Uniform actions in [-1, 1]."""
        return lambda obs: rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)

    @abstractmethod
    def success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        """Whether ``state`` meets the task's success criterion for ``goal``."""

    @abstractmethod
    def distance(self, state: np.ndarray, goal: np.ndarray) -> float:
        """Distance to the goal in true state space (reported as final_distance)."""

    def sample_eval_case(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A task-native (start, goal) pair, reproducible from ``rng``.

        The default protocol draws cases from held-out episodes instead
        (harness/cases.py); tasks with their own goal sets override this.
        """
        raise NotImplementedError(f"task {self.name!r} has no task-native evaluation cases")

    def simulate(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray | None:
        """Batched true dynamics (N, S) × (N, A) -> (N, S), for the oracle; None if unavailable."""
        return None


def make_task(name: str, **options: Any) -> Task:
    """Build a registered task by name; unknown names raise with the list of known ones."""
    return task_class(name)(**options)


def task_class(name: str) -> type[Task]:
    """The registered task class (imported on first use); unknown names raise with the list of known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    module_name, class_name = TASKS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"task {name!r} needs an optional dependency ({error.name}); install it with: pip install -e '.[{name}]'"
        ) from error
    return getattr(module, class_name)
