"""Evaluation cases: seeded (start, goal) pairs drawn from recorded episodes.

Following the published protocol, a case starts at a state of an episode and its
goal is the state ``goal_offset`` steps later in the same episode, so every goal is
reachable. Cases depend only on the data and the protocol (never on the model or
the condition), so every comparison is paired.

A :class:`Case` is the evaluator's: it holds true states and the recorded actions. A
controller gets its :class:`CaseView` only (what a real robot would know of the episode:
which one it is and its seed); the goal image and the history frames and actions reach it
as pixels and arrays through ``Controller.begin`` and ``Observation``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from harness.eval.protocol import EvalProtocol
from tasks.base import StateLeakError, Task
from tasks.data import Episodes

MAX_DRAWS = 1000  # per case, before giving up on finding an unsolved start


class CaseError(ValueError):
    """The data cannot supply cases for this protocol (user-fixable: more or longer episodes)."""


@dataclass(frozen=True)
class CaseView:
    """What a controller may know of a case: which one it is and its seed, never its states or actions."""

    index: int
    case_seed: int

    def __getattr__(self, name: str) -> Any:
        """Only reached for a missing attribute: a case's true states and recorded actions raise StateLeakError."""
        if name in EVALUATOR_ONLY:
            raise StateLeakError(
                f"a controller read case.{name}, which only the evaluator may; controllers see the goal image "
                f"and the history frames and actions (Controller.begin, Observation)"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


@dataclass(frozen=True)
class Case(CaseView):
    """One evaluation episode's setup, the evaluator's alone: controllers get :meth:`view` and rendered pixels."""

    episode: int
    start_step: int
    history_states: np.ndarray  # (h, S): states at start - (h-1)·frameskip, ..., start
    history_actions: np.ndarray  # (h-1, A_block): recorded action blocks between them
    goal: np.ndarray  # (S,)
    recorded_actions: np.ndarray  # (goal_offset, A_env): what the episode did from start to goal
    start_solved: bool  # the start already met the goal (kept only when not resampling)

    @property
    def start(self) -> np.ndarray:
        return self.history_states[-1]

    def view(self) -> CaseView:
        """The redacted case a controller receives (a fresh CaseView holding no reference to this case)."""
        return CaseView(index=self.index, case_seed=self.case_seed)


# What a CaseView refuses: every field of a Case beyond the view's own, and the start state.
EVALUATOR_ONLY = frozenset({f.name for f in fields(Case)} - {f.name for f in fields(CaseView)} | {"start"})


def make_cases(task: Task, episodes: Episodes, protocol: EvalProtocol) -> tuple[list[Case], int]:
    """``protocol.episodes`` cases and how many already-solved starts were redrawn."""
    history, frameskip, offset = protocol.history, protocol.frameskip, protocol.goal_offset
    assert history is not None and frameskip is not None, "resolve the protocol against the task first"
    count, length = episodes.actions.shape[:2]
    first = (history - 1) * frameskip
    if length - offset < first:
        raise CaseError(
            f"episodes of {length} steps are too short for protocol {protocol.name!r} "
            f"(goal {offset} steps ahead after {first} steps of history); collect longer episodes (data.steps)"
        )
    cases, resampled = [], 0
    for index in range(protocol.episodes):
        case_seed = int(np.random.SeedSequence([protocol.case_seed, index]).generate_state(1)[0])
        rng = np.random.default_rng(case_seed)
        for _ in range(MAX_DRAWS):
            episode = int(rng.integers(count))
            start = int(rng.integers(first, length - offset + 1))
            states = episodes.states[episode]
            solved = bool(task.success(states[start], states[start + offset]))
            if not (solved and protocol.resample_solved):
                break
            resampled += 1
        else:
            raise CaseError(
                f"case {index}: no unsolved start found in {MAX_DRAWS} draws; is the goal offset too small?"
            )
        cases.append(case_at(episodes.states, episodes.actions, protocol, episode, start, case_seed, index, solved))
    return cases, resampled


def case_fingerprint(task: Task, source_key: str, cases: Sequence[Case]) -> str:
    """A short sha256 over what makes a trial's evaluation cases: the task and its version, the dataset the
    cases come from (its key), and each case's seed, episode, start step, start state and goal state as
    evaluated. Two rows with the same fingerprint (and protocol hash) were scored on the same cases."""
    identity = {
        "task": task.name,
        "version": task.version,
        "source": source_key,
        "cases": [
            [case.case_seed, case.episode, case.start_step, case.start.tolist(), case.goal.tolist()] for case in cases
        ],
    }
    return hashlib.sha256(json.dumps(identity, separators=(",", ":")).encode()).hexdigest()[:16]


def case_at(
    states: np.ndarray,
    actions: np.ndarray,
    protocol: EvalProtocol,
    episode: int,
    start: int,
    case_seed: int,
    index: int = 0,
    start_solved: bool = False,
) -> Case:
    """The protocol's case starting at step ``start`` of ``episode`` (states (E, L+1, S), actions (E, L, A))."""
    history, frameskip, offset = protocol.history, protocol.frameskip, protocol.goal_offset
    first = (history - 1) * frameskip
    if not first <= start <= actions.shape[1] - offset:
        raise ValueError(f"start step {start} must lie in [{first}, {actions.shape[1] - offset}] for this protocol")
    steps = range(start - first, start + 1, frameskip)
    blocks = [actions[episode, s : s + frameskip].reshape(-1) for s in steps][:-1]  # the h-1 blocks between them
    width = frameskip * actions.shape[-1]
    return Case(
        index=index,
        case_seed=case_seed,
        episode=episode,
        start_step=start,
        history_states=states[episode, list(steps)],
        history_actions=np.asarray(blocks, dtype=np.float32).reshape(history - 1, width),
        goal=states[episode, start + offset],
        recorded_actions=actions[episode, start : start + offset],
        start_solved=start_solved,
    )
