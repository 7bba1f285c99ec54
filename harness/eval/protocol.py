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

    ``history`` and ``frameskip`` of None take the task's published defaults.
    """

    name: str = "wmbench"
    goal_offset: int = 25  # raw env steps from start to goal in the source episode (LeWM v3)
    budget: int = 50  # raw env steps the controller may take (LeWM v3)
    history: int | None = None
    frameskip: int | None = None
    episodes: int = 50  # evaluation episodes per condition (LeWM: 50)
    split: Literal["heldout", "train"] = "heldout"  # where (start, goal) pairs come from
    success: Literal["ever", "final"] = "ever"  # "ever within" the goal during the budget, or at the end
    resample_solved: bool = True  # redraw a case whose start already meets the goal
    case_seed: int = 0  # seeds the cases; shared by every model, seed and condition

    def __post_init__(self) -> None:
        for name in ("goal_offset", "budget", "episodes", "history", "frameskip"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"protocol.{name} must be a positive integer, got {value!r}")
        if self.split not in ("heldout", "train"):
            raise ValueError(f"protocol.split must be heldout or train, got {self.split!r}")
        if self.success not in ("ever", "final"):
            raise ValueError(f"protocol.success must be ever or final, got {self.success!r}")

    def resolved(self, default_history: int, default_frameskip: int) -> EvalProtocol:
        """This protocol with the task's defaults filled in."""
        return dataclasses.replace(
            self,
            history=self.history if self.history is not None else default_history,
            frameskip=self.frameskip if self.frameskip is not None else default_frameskip,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def hash(self) -> str:
        """Short hash of everything that changes what a success rate means (the name excluded)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


PRESETS: dict[str, EvalProtocol] = {
    # The harness default: the published 25/50 setting on held-out episodes, solved starts redrawn.
    "wmbench": EvalProtocol(name="wmbench"),
    # LeWM paper v3 / released config: cases from the training episodes, no resampling.
    "lewm_v3": EvalProtocol(name="lewm_v3", split="train", resample_solved=False),
    # LeWM paper v1 (Two-Room): goal 100 steps ahead, 150-step budget.
    "lewm_v1": EvalProtocol(name="lewm_v1", goal_offset=100, budget=150, split="train", resample_solved=False),
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
