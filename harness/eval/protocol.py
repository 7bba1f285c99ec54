"""Evaluation protocols: the named settings that decide what a success rate means.

Every row records its resolved protocol and a hash of it; the leaderboard never
ranks rows of different protocols together (DESIGN.md, "Evaluation integrity").
Presets reproduce published settings (REFERENCE.md, "Planning and evaluation protocol").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class EvalProtocol:
    """How evaluation cases are drawn and judged.

    ``history``, ``frameskip`` and ``success_test`` of None take the task's defaults.
    ``success_test`` names the task's test (``Task.success_tests``): ``"published"`` is the
    authors' evaluation's on every task; e.g. Push-T's ``"coverage"`` or Reacher's
    ``"fingertip"`` are the packages' own. It is hashed, so rows judged differently are
    never ranked together.
    """

    name: str = "wmbench"
    goal_offset: int = 25  # raw env steps from start to goal in the source episode (LeWM v3)
    budget: int = 50  # raw env steps the controller may take (LeWM v3)
    history: int | None = None
    frameskip: int | None = None
    episodes: int = 50  # evaluation episodes per condition (LeWM: 50)
    split: Literal["heldout", "train"] = "heldout"  # where (start, goal) pairs come from
    success: Literal["ever", "final"] = "ever"  # "ever within" the goal during the budget, or at the end
    success_test: str | None = None  # which of the task's success tests judges (Task.success_tests)
    resample_solved: bool = True  # redraw a case whose start already meets the goal
    case_seed: int = 0  # seeds the cases; shared by every model, seed and condition

    def __post_init__(self) -> None:
        # The protocol is typed Any in the sweep schema (a preset name or a dict), so the types are checked here.
        problems = []  # every bad field, one line each: the sweep loader reports them all at once
        if not (isinstance(self.name, str) and self.name):
            problems.append(f"protocol.name must be a non-empty string, got {self.name!r}")
        for name in ("goal_offset", "budget", "episodes", "history", "frameskip"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value >= 1):
                problems.append(f"protocol.{name} must be a positive integer, got {value!r}")
        if not (_is_int(self.case_seed) and self.case_seed >= 0):
            problems.append(f"protocol.case_seed must be a non-negative integer, got {self.case_seed!r}")
        if self.split not in ("heldout", "train"):
            problems.append(f"protocol.split must be heldout or train, got {self.split!r}")
        if self.success not in ("ever", "final"):
            problems.append(f"protocol.success must be ever or final, got {self.success!r}")
        if self.success_test is not None and not (isinstance(self.success_test, str) and self.success_test):
            problems.append(f"protocol.success_test must name a task's success test, got {self.success_test!r}")
        if not isinstance(self.resample_solved, bool):
            problems.append(f"protocol.resample_solved must be true or false, got {self.resample_solved!r}")
        if problems:
            raise ValueError("\n".join(problems))

    def resolved(
        self, default_history: int, default_frameskip: int, default_success_test: str | None = None
    ) -> EvalProtocol:
        """This protocol with the task's defaults filled in (``default_success_test``: the test the task judges by)."""
        return dataclasses.replace(
            self,
            history=self.history if self.history is not None else default_history,
            frameskip=self.frameskip if self.frameskip is not None else default_frameskip,
            success_test=self.success_test if self.success_test is not None else default_success_test,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def hash(self) -> str:
        """Short hash of everything that changes what a success rate means (the name excluded)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not a count


PRESETS: dict[str, EvalProtocol] = {
    # The harness default: the published 25/50 setting and success tests, on held-out episodes, solved
    # starts redrawn. The published tests (not e.g. Push-T's stricter coverage) so that its rows differ
    # from lewm_v3's only in where the cases come from; the packages' own tests stay named options.
    "wmbench": EvalProtocol(name="wmbench", success_test="published"),
    # LeWM paper v3 / released config: cases from the training episodes, no resampling, the authors' tests.
    "lewm_v3": EvalProtocol(name="lewm_v3", split="train", resample_solved=False, success_test="published"),
    # LeWM paper v1 (Two-Room): goal 100 steps ahead, 150-step budget.
    "lewm_v1": EvalProtocol(
        name="lewm_v1", goal_offset=100, budget=150, split="train", resample_solved=False, success_test="published"
    ),
}


def resolve_protocol(spec: str | dict[str, Any]) -> EvalProtocol:
    """A preset name, or a dict ``{preset: NAME, <field>: value, ...}`` of overrides on one."""
    if isinstance(spec, str):
        spec = {"preset": spec}
    spec = dict(spec)
    preset = spec.pop("preset", "wmbench")
    if preset not in PRESETS:
        raise ValueError(f"protocol.preset {preset!r} is unknown; known presets: {', '.join(PRESETS)}")
    known = {f.name for f in dataclasses.fields(EvalProtocol)}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"protocol.{sorted(unknown)[0]} is not a protocol field; fields: {', '.join(sorted(known))}")
    base = PRESETS[preset]
    if "name" not in spec and any(getattr(base, key) != value for key, value in spec.items()):
        spec["name"] = f"{preset}+custom"
    return dataclasses.replace(base, **spec)
