"""The trial spec: everything one trial is, as one frozen, typed value.

A sweep file is validated into :class:`TrialSpec` values (harness/sweep/config.py) and
they stay typed until a row is written: the trial reads fields, never string keys. A
spec round-trips through JSON (:meth:`TrialSpec.to_dict` / :meth:`TrialSpec.from_dict`),
which is how every result row can re-run itself, and its :attr:`TrialSpec.trial_id` is a
hash of what it is, so the same spec always gets the same id (resume relies on it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from harness.eval.controllers import reference_controller
from harness.eval.planners import PlannerConfig
from harness.eval.protocol import EvalProtocol
from harness.trial.training import TrainConfig
from tasks.conditions import Condition
from tasks.data import MANIFEST, POLICIES
from tasks.factors import FACTORS


@dataclass(frozen=True)
class TaskSpec:
    """Which task, at which frame size, with which task options (e.g. ``{agent_radius: 4}``).

    ``data`` overrides fields of the sweep's ``data:`` block for this task alone (e.g. Reacher's
    ``{policy: random}``, as LeWM collects it, or fewer episodes where collection is slow).
    """

    name: str = MISSING
    image_size: int = 64
    options: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The bare field is named: a sweep's loader prefixes the task's place (``tasks[0].``).
        if self.image_size < 1:
            raise ValueError(f"image_size must be at least 1 pixel, got {self.image_size}")


@dataclass(frozen=True)
class ModelSpec:
    """A zoo model (or a reference controller, ``random`` / ``oracle``), its size preset and config overrides."""

    name: str = MISSING
    size: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields, e.g. {sigreg_weight: 0.1}


@dataclass(frozen=True)
class DataSpec:
    """How the training data and the held-out episodes are collected."""

    episodes: int = 200  # training episodes collected per task
    steps: int | None = None  # raw steps per episode; None = the task's default
    policy: str = "expert"  # "expert" | "random"
    noise: float = 0.3  # expert action noise (broadens the state coverage)
    heldout_episodes: int = 50  # a separate collection that held-out cases and diagnostics come from
    seed: int = 0  # data seed (shared by every model and trial seed)
    workers: int = 1  # collection processes inside a trial (a trial holds one CPU slot by default)
    # A converted dataset's folder (absolute; python -m tasks.convert_swm writes one): the training episodes
    # come from it instead of a collection; held-out episodes (cases, diagnostics) are still collected.
    source: str | None = None

    def __post_init__(self) -> None:
        problems = []  # every bad field, one line each: the sweep loader reports them all at once
        if self.source is not None:
            if not Path(self.source).is_absolute():  # Ray runs each trial in its own working directory
                problems.append(f"data.source must be an absolute path, got {self.source!r}")
            elif not (Path(self.source) / MANIFEST).is_file():
                problems.append(
                    f"data.source {self.source!r} holds no converted dataset (no {MANIFEST}); "
                    "convert one with python -m tasks.convert_swm"
                )
        if self.policy not in POLICIES:
            problems.append(f"data.policy {self.policy!r} must be one of {', '.join(POLICIES)}")
        for name in ("episodes", "heldout_episodes", "workers"):
            if getattr(self, name) < 1:
                problems.append(f"data.{name} must be at least 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            problems.append(f"data.steps must be at least 1 (or null for the task's default), got {self.steps}")
        if not 0 <= self.noise < math.inf:
            problems.append(f"data.noise must be a non-negative, finite std, got {self.noise}")
        if self.seed < 0:  # numpy's generators take no negative seed
            problems.append(f"data.seed must be zero or positive, got {self.seed}")
        if problems:
            raise ValueError("\n".join(problems))


# Fields that say where a trial sits in its sweep, not what it is: left out of the trial id.
BOOKKEEPING = ("sweep", "variant")
# Fields added after trial ids were first written, with the value that means "as before": left out of
# the id while they hold it, so old ids (and resume) hold.
LATER_FIELDS = {
    ("data", "source"): None,
    ("train", "cpu_bf16"): False,
    ("train", "shift_augment"): 0,
    ("planner", "precision"): "fp32",
    ("planner", "compile"): False,
    ("planner", "cuda_graphs"): False,
}


@dataclass(frozen=True)
class TrialSpec:
    """One trial: a task × model × seed × grid point of a sweep, with every setting resolved."""

    sweep: str
    task: TaskSpec
    task_version: str  # the task's code version: a changed task never resumes from old rows
    model: ModelSpec
    seed: int
    data: DataSpec
    train: TrainConfig
    planner: PlannerConfig
    protocol: EvalProtocol  # presets applied; history and frameskip resolve against the task
    conditions: tuple[Condition, ...]
    diagnostics: bool = True  # probe R² and surprise AUROC on held-out episodes
    variant: str = ""  # what sets this trial apart from others of its model on its task (never seeds)

    @property
    def role(self) -> str:
        """``floor`` / ``ceiling`` for a reference controller, ``model`` for a zoo entry."""
        reference = reference_controller(self.model.name)
        return reference.role if reference is not None else "model"

    @property
    def trial_id(self) -> str:
        """A readable, deterministic id: the same spec always gets the same id."""
        identity = {k: v for k, v in self.to_dict().items() if k not in BOOKKEEPING}
        for (section, name), unchanged in LATER_FIELDS.items():
            if identity[section].get(name) == unchanged:
                identity[section].pop(name, None)
        for condition in identity["conditions"]:  # the factors of variation came later too: left out while 0
            for name in FACTORS:
                if condition.get(name) == 0.0:
                    del condition[name]
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
        task, model = (re.sub(r"[^A-Za-z0-9_.-]", "_", name) for name in (self.task.name, self.model.name))
        return f"{task}-{model}-s{self.seed}-{digest}"  # an import path's ':' stays out of file names

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (conditions as a list)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        """The spec :meth:`to_dict` wrote; every part is validated again as it is rebuilt."""
        return cls(
            sweep=data["sweep"],
            task=TaskSpec(**data["task"]),
            task_version=data["task_version"],
            model=ModelSpec(**data["model"]),
            seed=int(data["seed"]),
            data=DataSpec(**data["data"]),
            train=TrainConfig(**data["train"]),
            planner=PlannerConfig(**data["planner"]),
            protocol=EvalProtocol(**data["protocol"]),
            conditions=tuple(Condition(**condition) for condition in data["conditions"]),
            diagnostics=bool(data.get("diagnostics", True)),
            variant=data.get("variant", ""),
        )

    def with_values(self, values: dict[str, Any]) -> TrialSpec:
        """This spec with dotted keys set (a grid point or a searched sample), e.g. ``{"train.lr": 1e-3}``.

        ``model.<field>`` means a model config override; a changed protocol field renames the
        protocol (``wmbench+goal_offset=50``), so a different protocol is named apart, not just hashed apart.
        """
        tree = self.to_dict()
        for key, value in values.items():
            set_dotted(tree, key, value)
            if key.startswith("protocol."):
                tree["protocol"]["name"] += f"+{key.removeprefix('protocol.')}={value}"
        return TrialSpec.from_dict(tree)

    def with_condition(self, condition: Condition) -> TrialSpec:
        """This spec evaluated under one condition only (the same trial id is not kept)."""
        return dataclasses.replace(self, conditions=(condition,))


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(t, "model.overrides.sigreg_weight", 0.1)``; ``model.<field>`` goes to the overrides."""
    parts = dotted.split(".")
    if parts[0] == "model" and len(parts) > 1 and parts[1] not in ("name", "size", "overrides"):
        parts = ["model", "overrides", *parts[1:]]
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
