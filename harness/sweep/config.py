"""Sweep configuration: a YAML file composed by Hydra, validated into typed dataclasses.

Any unknown key, wrong type or unknown task/model name raises :class:`ConfigError`
naming the key and what is accepted, before Ray or torch does any work.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.eval.controllers import REFERENCE_CONTROLLERS
from harness.eval.planners import PlannerConfig
from harness.eval.protocol import EvalProtocol, resolve_protocol
from harness.trial.spec import DataSpec, ModelSpec, TaskSpec, TrialSpec
from harness.trial.training import TrainConfig
from models.registry import MODELS, build_model, model_sizes
from tasks.base import TASKS, task_class
from tasks.conditions import Condition

GRID_ROOTS = ("model.", "train.", "planner.", "data.", "task.", "protocol.")  # what search.grid may vary
PROTOCOL_FIELDS = tuple(f.name for f in dataclasses.fields(EvalProtocol) if f.name != "name")


class ConfigError(ValueError):
    """A user-fixable problem in a sweep file or override; the message names the key."""


@dataclass
class ResourcesSpec:
    cpu: int = 1
    gpu: str = "auto"  # "auto": 1 GPU if the cluster has any; "require": fail without; "never"
    gpu_fraction: float = 1.0  # below 1 packs several small trials on one GPU
    gpus_per_trial: int = 1  # above 1: one model trained over several GPUs with DDP (SIGReg all-reduced)

    def __post_init__(self) -> None:
        if self.cpu < 1 or self.gpus_per_trial < 1:
            raise ValueError(f"resources.cpu and resources.gpus_per_trial must be at least 1, got {self.cpu}, "
                             f"{self.gpus_per_trial}")  # fmt: skip
        if self.gpu not in ("auto", "require", "never"):
            raise ValueError(f"resources.gpu must be auto, require or never, got {self.gpu!r}")
        if not 0 < self.gpu_fraction <= 1:
            raise ValueError(f"resources.gpu_fraction must lie in (0, 1], got {self.gpu_fraction}")


@dataclass
class SearchSpec:
    grid: dict[str, list[Any]] = field(default_factory=dict)  # dotted trial key -> values
    space: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # key -> {loguniform: [lo, hi]}
    metric: str = "success_rate"
    mode: str = "max"
    num_samples: int = 8


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


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Compose ``path`` with ``key=value`` overrides and validate it into a :class:`SweepConfig`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} does not exist")
    try:
        with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base=None):
            # "++key=value" adds or sets: whether a key exists is then checked against the schema below.
            plain = [o if o.startswith(("+", "~")) else f"++{o}" for o in overrides or []]
            raw = compose(config_name=path.stem, overrides=plain)
        schema = OmegaConf.structured(SweepConfig)
        _unlock(schema)  # the specs are frozen dataclasses; their schema nodes must accept the file's values
        merged = OmegaConf.merge(schema, raw)
        OmegaConf.resolve(merged)
        sweep: SweepConfig = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, HydraException) as error:
        raise ConfigError(f"{path}: {_describe(error)}") from None
    except yaml.YAMLError as error:  # malformed YAML: name the line, not PyYAML's stack
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    except ValueError as error:  # a spec's own check (__post_init__) of a value
        raise ConfigError(f"{path}: {error}") from None
    _check_names(sweep, path)
    return sweep


def _unlock(node: DictConfig | ListConfig) -> None:
    """Clear the read-only flag OmegaConf sets on frozen dataclasses, down the whole schema."""
    node._set_flag("readonly", False)
    children = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in children:
        child = node._get_node(key)
        if isinstance(child, DictConfig | ListConfig):
            _unlock(child)
        else:
            child._set_flag("readonly", False)


def _describe(error: Exception) -> str:
    """One line naming the bad key, from an OmegaConf/Hydra error."""
    key = getattr(error, "full_key", None)
    message = str(error).splitlines()[0]
    if key:
        return f"bad key {key!r}: {message}"
    return message


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _check_names(sweep: SweepConfig, path: Path) -> None:
    if not NAME.fullmatch(sweep.name) or ".." in sweep.name:
        raise ConfigError(
            f"{path}: name {sweep.name!r} must be a plain folder name (letters, digits, '_', '-', '.'; no '/' "
            "or '..'): results go to results_dir/<name>, and a name must not point elsewhere"
        )
    for i, task in enumerate(sweep.tasks):
        if task.name not in TASKS:
            raise ConfigError(f"{path}: tasks[{i}].name {task.name!r} is unknown; known tasks: {', '.join(TASKS)}")
    known_models = [*MODELS, *REFERENCE_CONTROLLERS]
    for i, model in enumerate(sweep.models):
        if model.name not in known_models:
            raise ConfigError(
                f"{path}: models[{i}].name {model.name!r} is unknown; known models: {', '.join(known_models)}"
            )
        if model.name in MODELS and model.size not in model_sizes(model.name):
            sizes = ", ".join(model_sizes(model.name))
            raise ConfigError(f"{path}: models[{i}].size {model.size!r} is unknown for {model.name}; sizes: {sizes}")
    if sweep.resources.gpu not in ("auto", "require", "never"):
        raise ConfigError(f"{path}: resources.gpu {sweep.resources.gpu!r} must be one of auto, require, never")
    try:
        resolve_protocol(sweep.protocol)
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None
    for key in sweep.search.grid:
        if not key.startswith(GRID_ROOTS):
            raise ConfigError(f"{path}: search.grid key {key!r} must start with one of {', '.join(GRID_ROOTS)}")
        if key.startswith("protocol.") and key.removeprefix("protocol.") not in PROTOCOL_FIELDS:
            raise ConfigError(f"{path}: search.grid key {key!r}: not a protocol field ({', '.join(PROTOCOL_FIELDS)})")


def protocol_of(sweep: SweepConfig) -> EvalProtocol:
    """The sweep's protocol with presets applied (task defaults still unresolved)."""
    return resolve_protocol(OmegaConf.to_container(OmegaConf.create({"p": sweep.protocol}))["p"])


def task_data(sweep: SweepConfig, index: int) -> DataSpec:
    """The sweep's ``data:`` block with task ``index``'s own ``data`` overrides applied."""
    overrides = sweep.tasks[index].data
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(DataSpec)})
    if unknown:
        known = ", ".join(f.name for f in dataclasses.fields(DataSpec))
        raise ConfigError(f"tasks.{index}.data.{unknown[0]} is not a data field; known: {known}")
    try:
        return dataclasses.replace(sweep.data, **overrides)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"tasks.{index}.data: {error}") from None


def expand_trials(sweep: SweepConfig) -> list[TrialSpec]:
    """Every (task × model × seed × grid point) as a typed trial spec, each named apart by its variant."""
    grid_keys = list(sweep.search.grid)
    grid_points = list(itertools.product(*sweep.search.grid.values())) or [()]
    protocol = protocol_of(sweep)
    trials = []
    data_of = {index: task_data(sweep, index) for index in range(len(sweep.tasks))}
    for (index, task), model, seed, point in itertools.product(
        enumerate(sweep.tasks), sweep.models, sweep.seeds, grid_points
    ):
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
        try:
            trials.append(base.with_values(dict(zip(grid_keys, point, strict=True))))
        except (TypeError, ValueError) as error:
            raise ConfigError(f"search.grid point {dict(zip(grid_keys, point, strict=True))}: {error}") from None
    for trial in trials:
        check_trial(trial)
    return _name_variants(trials)


def check_trial(trial: TrialSpec) -> None:
    """The checks that need a task and a model together, made before Ray starts: episodes long enough for
    the protocol's cases and the training windows, and a model that can be built at the task's frame size."""
    cls = task_class(trial.task.name)
    where = f"{trial.task.name} × {trial.model.name}"
    history = trial.protocol.history or cls.default_history
    frameskip = trial.protocol.frameskip or cls.default_frameskip
    steps = trial.data.steps or cls.episode_steps
    needed = (history - 1) * frameskip + trial.protocol.goal_offset
    if needed > steps:
        raise ConfigError(
            f"{where}: protocol.goal_offset {trial.protocol.goal_offset} with history {history} × frameskip "
            f"{frameskip} needs episodes of at least {needed} steps, but data.steps is {steps}"
        )
    if trial.role != "model":
        return
    if trial.train.num_frames * frameskip > steps:
        raise ConfigError(
            f"{where}: a training window of train.num_frames {trial.train.num_frames} × frameskip {frameskip} "
            f"needs {trial.train.num_frames * frameskip} steps, but data.steps is {steps}"
        )
    _check_buildable(trial.model, trial.task.image_size, cls.action_dim * frameskip, history)


@functools.cache
def _buildable(name: str, size: str, image_size: int, action_dim: int, history: int, overrides: str) -> str | None:
    """Why the model cannot be built (its config's own check), or None; built on the meta device, no weights."""
    try:
        with torch.device("meta"):
            build_model(name, size, image_size, action_dim, history=history, **json.loads(overrides))
    except (ValueError, TypeError) as error:
        return str(error)
    except Exception:  # e.g. weights that only load on a real device: the trial reports those itself
        return None
    return None


def _check_buildable(model: ModelSpec, image_size: int, action_dim: int, history: int) -> None:
    overrides = {k: v for k, v in model.overrides.items() if k != "history"}
    problem = _buildable(model.name, model.size, image_size, action_dim, history, json.dumps(overrides, sort_keys=True))
    if problem is not None:
        raise ConfigError(f"models {model.name} ({model.size}) at tasks image_size {image_size}: {problem}")


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
