"""Sweep configuration: a YAML file composed by Hydra, validated into typed dataclasses.

Any unknown key, wrong type, out-of-range value or unknown task/model name raises
:class:`ConfigError` naming the key and what is accepted, before Ray or torch does any
work; every problem found is reported at once, a line each (harness/sweep/validate.py).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.eval.controllers import REFERENCE_CONTROLLERS, reference_controller
from harness.eval.planners import PlannerConfig
from harness.eval.protocol import EvalProtocol, resolve_protocol
from harness.sweep.validate import ConfigError, Problems, build_each, describe, merge_each, unlock
from harness.trial.spec import DataSpec, ModelSpec, TaskSpec, TrialSpec
from harness.trial.training import TrainConfig
from models.registry import MODELS, build_model, is_model, model_sizes
from tasks.base import TASKS, task_class
from tasks.conditions import Condition
from tasks.swm_data import source_problem

GRID_ROOTS = ("model.", "train.", "planner.", "data.", "task.", "protocol.")  # what search.grid may vary
PROTOCOL_FIELDS = tuple(f.name for f in dataclasses.fields(EvalProtocol) if f.name != "name")


@dataclass
class ResourcesSpec:
    cpu: int = 1
    gpu: str = "auto"  # "auto": 1 GPU if the cluster has any; "require": fail without; "never"
    gpu_fraction: float = 1.0  # below 1 packs several small trials on one GPU
    gpus_per_trial: int = 1  # above 1: one model trained over several GPUs with DDP (SIGReg all-reduced)

    def __post_init__(self) -> None:
        problems = []  # every bad field, one line each: load_sweep reports them all at once
        for name in ("cpu", "gpus_per_trial"):
            if getattr(self, name) < 1:
                problems.append(f"resources.{name} must be at least 1, got {getattr(self, name)}")
        if self.gpu not in ("auto", "require", "never"):
            problems.append(f"resources.gpu must be auto, require or never, got {self.gpu!r}")
        if not 0 < self.gpu_fraction <= 1:
            problems.append(f"resources.gpu_fraction must lie in (0, 1], got {self.gpu_fraction}")
        if problems:
            raise ValueError("\n".join(problems))


@dataclass
class SearchSpec:
    grid: dict[str, list[Any]] = field(default_factory=dict)  # dotted trial key -> values
    space: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # key -> {loguniform: [lo, hi]}
    metric: str = "success_rate"
    mode: str = "max"
    num_samples: int = 8

    def __post_init__(self) -> None:
        problems = []  # every bad field, one line each: load_sweep reports them all at once
        for key, values in self.grid.items():
            problems += _search_key_problems("grid", key)
            if not values:
                problems.append(f"search.grid.{key} lists no values: the sweep would have no trials")
        for key, distribution in self.space.items():
            problems += _search_key_problems("space", key)
            problems += _distribution_problems(key, distribution)
        if self.mode not in ("max", "min"):
            problems.append(f"search.mode must be max or min, got {self.mode!r}")
        if self.num_samples < 1:
            problems.append(f"search.num_samples must be at least 1, got {self.num_samples}")
        if problems:
            raise ValueError("\n".join(problems))


def _search_key_problems(kind: str, key: str) -> list[str]:
    """Why ``key`` of ``search.grid`` or ``search.space`` names no trial setting (empty when it does)."""
    if not key.startswith(GRID_ROOTS):
        return [f"search.{kind} key {key!r} must start with one of {', '.join(GRID_ROOTS)}"]
    if key.startswith("protocol.") and key.removeprefix("protocol.") not in PROTOCOL_FIELDS:
        return [f"search.{kind} key {key!r}: not a protocol field ({', '.join(PROTOCOL_FIELDS)})"]
    return []


def _distribution_problems(key: str, distribution: dict[str, list[float]]) -> list[str]:
    """Why ``search.space.<key>`` is not one ``{uniform | loguniform: [low, high]}`` (empty when it is)."""
    if len(distribution) != 1 or next(iter(distribution)) not in ("uniform", "loguniform"):
        return [f"search.space.{key} must be one of {{uniform: [low, high]}}, {{loguniform: [low, high]}}"]
    (kind, bounds), *_ = distribution.items()
    if not (len(bounds) == 2 and all(math.isfinite(bound) for bound in bounds) and bounds[0] < bounds[1]):
        return [f"search.space.{key}.{kind} must be two finite bounds [low, high] with low < high, got {bounds}"]
    if kind == "loguniform" and bounds[0] <= 0:
        return [f"search.space.{key}.loguniform needs a positive low bound, got {bounds[0]}"]
    return []


@dataclass
class SweepConfig:
    name: str = MISSING
    results_dir: str = "results/${name}"
    tasks: list[TaskSpec] = MISSING
    models: list[ModelSpec] = MISSING  # zoo entries (models.registry.MODELS) or reference controllers
    seeds: list[int] = field(default_factory=lambda: [0])
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainConfig = field(default_factory=TrainConfig)  # published defaults; CPU sweeps set their own
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    protocol: Any = "wmbench"  # a preset name or {preset: NAME, <field>: value}
    conditions: list[Condition] = field(default_factory=lambda: [Condition()])
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    diagnostics: bool = True  # per model: linear-probe R² and surprise AUROC on held-out episodes
    max_failures: int = 2  # Ray retries of a trial whose worker died
    strict: bool = False  # exit non-zero when any trial failed; guard planning against state reads
    tracking: str = "none"  # none | tensorboard | wandb | mlflow: Ray Tune's loggers (harness/sweep/tracking.py)


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Compose ``path`` with ``key=value`` overrides and validate it into a :class:`SweepConfig`.

    Every problem found is reported at once: one :class:`ConfigError`, a line per problem, each naming its key.
    """
    path = Path(path)
    raw = _compose(path, overrides or [])
    schema = OmegaConf.structured(SweepConfig)
    unlock(schema)  # the specs are frozen dataclasses; their schema nodes must accept the file's values
    problems = Problems()
    unmerged = merge_each(schema, raw, problems)
    sections = build_each(schema, [key for key in schema if key not in unmerged], problems)
    for problem in _sweep_problems(sections):
        problems.add(problem)
    problems.raise_if_any(where=str(path))
    return SweepConfig(**sections)


def _compose(path: Path, overrides: list[str]) -> DictConfig:
    """The sweep file with its overrides applied, not yet checked against the schema."""
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} does not exist")
    try:
        with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base=None):
            # "++key=value" adds or sets: whether a key exists is then checked against the schema.
            plain = [o if o.startswith(("+", "~")) else f"++{o}" for o in overrides]
            return compose(config_name=path.stem, overrides=plain)
    except (OmegaConfBaseException, HydraException) as error:
        raise ConfigError(f"{path}: {describe(error)}") from None
    except yaml.YAMLError as error:  # malformed YAML: name the line, not PyYAML's stack
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
TRACKERS = ("none", "tensorboard", "wandb", "mlflow")  # SweepConfig.tracking


def _sweep_problems(sections: dict[str, Any]) -> Iterator[str]:
    """What the dataclasses cannot check alone: names against the registries, the protocol, seeds.

    ``sections`` holds the sweep's top-level values that were built; one that was not is skipped.
    """
    name = sections.get("name")
    if name is not None and (not NAME.fullmatch(name) or ".." in name):
        yield (
            f"name {name!r} must be a plain folder name (letters, digits, '_', '-', '.'; no '/' "
            "or '..'): results go to results_dir/<name>, and a name must not point elsewhere"
        )
    for key in ("tasks", "models", "seeds", "conditions"):
        if sections.get(key) == []:
            yield f"{key} is empty: a sweep needs at least one"
    for i, task in enumerate(sections.get("tasks", [])):
        if task.name not in TASKS:
            try:
                task_class(task.name)  # an import path or entry point: importable, and a Task
            except (ValueError, ImportError) as error:
                yield f"tasks[{i}].name: {error}"
    known_models = [*MODELS, *REFERENCE_CONTROLLERS]
    for i, model in enumerate(sections.get("models", [])):
        try:
            if reference_controller(model.name) is not None:
                continue
        except ValueError as error:  # a controller from outside that does not say what it measures
            yield f"models[{i}].name: {error}"
            continue
        if not is_model(model.name):
            yield (
                f"models[{i}].name {model.name!r} is unknown; known models: {', '.join(known_models)}, "
                "or an import path 'package.module:build'"
            )
            continue
        try:
            sizes = model_sizes(model.name)
        except ValueError as error:  # an import path or entry point whose module does not keep the contract
            yield f"models[{i}].name: {error}"
            continue
        if model.size not in sizes:
            yield f"models[{i}].size {model.size!r} is unknown for {model.name}; sizes: {', '.join(sizes)}"
    for i, seed in enumerate(sections.get("seeds", [])):
        if seed < 0:  # numpy's generators take no negative seed
            yield f"seeds[{i}] must be zero or positive, got {seed}"
    if "protocol" in sections:
        try:
            resolve_protocol(sections["protocol"])
        except ValueError as error:
            yield from str(error).splitlines()
    if sections.get("tracking", "none") not in TRACKERS:
        yield f"tracking must be one of {', '.join(TRACKERS)}, got {sections['tracking']!r}"
    if sections.get("max_failures", 0) < 0:
        yield f"max_failures must be zero or positive (Ray's retries of a trial), got {sections['max_failures']}"


def protocol_of(sweep: SweepConfig) -> EvalProtocol:
    """The sweep's protocol with presets applied (task defaults still unresolved)."""
    return resolve_protocol(OmegaConf.to_container(OmegaConf.create({"p": sweep.protocol}))["p"])


def task_data(sweep: SweepConfig, index: int) -> DataSpec:
    """The sweep's ``data:`` block with task ``index``'s own ``data`` overrides applied."""
    overrides = sweep.tasks[index].data
    known = [f.name for f in dataclasses.fields(DataSpec)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError("\n".join(f"tasks.{index}.data.{key} is not a data field; known: {', '.join(known)}"
                                     for key in unknown))  # fmt: skip
    schema = OmegaConf.structured(sweep.data)  # typed, so a wrong type is named like one in the data: block
    unlock(schema)
    try:
        return OmegaConf.to_object(OmegaConf.merge(schema, overrides))
    except (OmegaConfBaseException, ValueError) as error:
        message = describe(error) if isinstance(error, OmegaConfBaseException) else str(error)
        raise ConfigError("\n".join(f"tasks.{index}.data: {line}" for line in message.splitlines())) from None


def expand_trials(sweep: SweepConfig) -> list[TrialSpec]:
    """Every (task × model × seed × grid point) as a typed trial spec, each named apart by its variant.

    Every problem found (a task's data overrides, a grid point, each trial's checks) is reported at once.
    """
    problems = Problems()
    data_of = {}
    for index in range(len(sweep.tasks)):
        with problems.collect():
            data_of[index] = task_data(sweep, index)
    grid_keys = list(sweep.search.grid)
    grid_points = list(itertools.product(*sweep.search.grid.values())) or [()]
    protocol = protocol_of(sweep)
    trials = []
    for (index, task), model, seed, point in itertools.product(
        enumerate(sweep.tasks), sweep.models, sweep.seeds, grid_points
    ):
        if index not in data_of:  # its data overrides were refused above
            continue
        base = TrialSpec(
            sweep=sweep.name,
            task=task,
            task_version=task_class(task.name).version,
            model=model,
            seed=seed,
            data=data_of[index],
            train=sweep.train,
            planner=sweep.planner,
            protocol=protocol,
            conditions=tuple(sweep.conditions),
            diagnostics=sweep.diagnostics,
        )
        values = dict(zip(grid_keys, point, strict=True))
        try:
            trials.append(base.with_values(values))
        except (TypeError, ValueError) as error:  # grid values are untyped: a wrong type is a TypeError
            problems.add(str(error), prefix=f"search.grid point {values}: ")
    for trial in trials:
        for problem in trial_problems(trial):
            problems.add(problem)
    repeated = [trial_id for trial_id, count in collections.Counter(t.trial_id for t in trials).items() if count > 1]
    if repeated:  # one id, one results file: Ray would run both and one row would overwrite the other
        problems.add(f"{len(repeated)} trial(s) appear twice or more, e.g. {repeated[0]}: a task, model, seed or grid "
                     "value is repeated")  # fmt: skip
    problems.raise_if_any()
    return _name_variants(trials)


def trial_problems(trial: TrialSpec) -> list[str]:
    """What needs a task and a model together, found before Ray starts: episodes long enough for the
    protocol's cases and the training windows, the task's success test, camera shifts inside the frame,
    and a model that can be built at the task's frame size."""
    cls = task_class(trial.task.name)
    history = trial.protocol.history or cls.default_history
    frameskip = trial.protocol.frameskip or cls.default_frameskip
    steps = trial.data.steps or cls.episode_steps
    problems = []
    needed = (history - 1) * frameskip + trial.protocol.goal_offset
    if needed > steps:
        problems.append(
            f"{trial.task.name}: protocol.goal_offset {trial.protocol.goal_offset} with history {history} × "
            f"frameskip {frameskip} needs episodes of at least {needed} steps, but data.steps is {steps}"
        )
    test = trial.protocol.success_test
    if test is not None and test not in cls.success_tests:
        problems.append(
            f"protocol.success_test {test!r} is not a test of task {trial.task.name}; "
            f"known tests: {', '.join(cls.success_tests)}"
        )
    for i, condition in enumerate(trial.conditions):
        if abs(condition.camera_shift) >= trial.task.image_size:
            problems.append(
                f"conditions[{i}].camera_shift {condition.camera_shift:g} moves the view a whole frame or more "
                f"({trial.task.name} at tasks image_size {trial.task.image_size})"
            )
        try:
            condition.check_task(cls)
        except ValueError as error:
            problems.append(f"conditions[{i}]: {error}")
    if trial.role != "model":
        return problems
    if trial.data.source is not None:  # converted stable-worldmodel data (tasks/swm_data.py) must fit the task
        problem = source_problem(trial.data.source, trial.task.name, trial.task.image_size)
        problems += [problem] if problem is not None else []
    if trial.train.num_frames * frameskip > steps:
        problems.append(
            f"{trial.task.name} × {trial.model.name}: a training window of train.num_frames "
            f"{trial.train.num_frames} × frameskip {frameskip} needs {trial.train.num_frames * frameskip} steps, "
            f"but data.steps is {steps}"
        )
    model = trial.model
    overrides = json.dumps({k: v for k, v in model.overrides.items() if k != "history"}, sort_keys=True)
    problem = _build_problem(
        model.name, model.size, trial.task.image_size, cls.action_dim * frameskip, history, overrides
    )
    if problem is not None:
        problems.append(f"models {model.name} ({model.size}) at tasks image_size {trial.task.image_size}: {problem}")
    return problems


@functools.cache
def _build_problem(name: str, size: str, image_size: int, action_dim: int, history: int, overrides: str) -> str | None:
    """Why the model cannot be built (its config's own check), or None; built on the meta device, no weights."""
    try:
        with torch.device("meta"):
            build_model(name, size, image_size, action_dim, history=history, **json.loads(overrides))
    except (ValueError, TypeError) as error:
        return str(error)
    except Exception:  # e.g. weights that only load on a real device: the trial reports those itself
        return None
    return None


def _name_variants(trials: list[TrialSpec]) -> list[TrialSpec]:
    """Each trial with its ``variant``: the settings, other than the seed, that differ between trials of
    one model on one task (e.g. ``planner.name=mppi``), so a leaderboard never averages them as seeds."""
    # The protocol is left out: the leaderboard already tables each protocol apart.
    flat = [_flatten({k: v for k, v in t.to_dict().items() if k not in ("seed", "sweep", "protocol")}) for t in trials]
    named = list(trials)
    for entry in {(t.task.name, t.model.name) for t in trials}:
        mine = [i for i, t in enumerate(trials) if (t.task.name, t.model.name) == entry]
        keys = sorted({k for i in mine for k in flat[i]})
        differing = [k for k in keys if len({json.dumps(flat[i].get(k), sort_keys=True) for i in mine}) > 1]
        for i in mine:
            variant = ", ".join(f"{k.removeprefix('model.overrides.')}={flat[i].get(k)}" for k in differing)
            named[i] = dataclasses.replace(trials[i], variant=variant)
    return named


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
