"""Impossible events: a recorded sequence edited at a known frame, for the violation-of-expectation test.

The agent teleports, vanishes, changes colour or passes through a wall, and the
sequence is re-rendered from there (harness/eval/surprise.py scores a model's surprise
on it). Every task has the teleport of :class:`ImpossibleEvents`; a task with more
events names its own subclass in ``Task.events_class`` (Two-Room: tasks/two_room.py).
A colour change is declared by naming the factor of variation that changes colour
(``swap_factor``, one of ``Task.factors``) and the colour it turns (``swap_rgb``): the
recorded states are rendered again from the event frame on with that colour (Cube's
cube, as LeWM's paper tests; Push-T's block; Reacher's arm).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tasks.base import Task

EVENTS = ("teleport", "vanish", "colour_swap", "pass_through_wall")  # every event name any task may offer


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
    # A "colour_swap" event (where ``events`` has it): this factor of variation turns ``swap_rgb`` at the event.
    swap_factor: str | None = None
    swap_rgb: tuple[float, float, float] = (0.35, 0.55, 0.91)  # a mid blue (ogbench's "blue")

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
        """Edited frames for a pixel event; None for a state event.

        A colour swap renders the recorded states again with ``swap_factor`` turned ``swap_rgb``.
        """
        if event == "colour_swap" and self.swap_factor is not None:
            return self.render_with(states, {self.swap_factor: np.asarray(self.swap_rgb)})
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
        return self.render_with(states, {})

    def render_with(self, states: np.ndarray, factors: dict[str, np.ndarray]) -> np.ndarray:
        """Frames (T, H, W, 3) of states (T, S), with these factors of variation set (name -> value)."""
        env = self.task.make_env(seed=0)
        try:
            env.set_factors(factors)
            return np.stack([env.set_state(state)["pixels"] for state in states])
        finally:
            env.close()


def impossible_events(task: Task, pool: np.ndarray) -> ImpossibleEvents:
    """The task's impossible events (``task.events_class``: a teleport for any task, more where it has its own)."""
    return task.events_class(task, pool)
