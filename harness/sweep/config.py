"""Sweep configuration: a YAML file composed by Hydra, validated into typed dataclasses.

Any unknown key, wrong type or unknown task/model name raises :class:`ConfigError`
naming the key and what is accepted, before Ray or torch does any work.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.eval.protocol import Protocol, resolve_protocol
from models.registry import MODELS
from tasks.base import TASKS, task_class
from tasks.conditions import Condition

GRID_ROOTS = ("model.", "train.", "planner.", "data.", "task.", "protocol.")  # what search.grid may vary
PROTOCOL_FIELDS = tuple(f.name for f in dataclasses.fields(Protocol) if f.name != "name")

CONTROLLERS = ("random", "oracle")  # reference controllers: no model, no training


class ConfigError(ValueError):
    """A user-fixable problem in a sweep file or override; the message names the key."""


@dataclass
class TaskSpec:
    name: str = MISSING
    image_size: int = 64
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    name: str = MISSING
    size: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  # model config fields, e.g. {sigreg_weight: 0.1}


@dataclass
class DataSpec:
    episodes: int = 200  # training episodes collected per task
    steps: int | None = None  # raw steps per episode; None = the task's default
    policy: str = "expert"  # "expert" | "random"
    noise: float = 0.3  # expert action noise (broadens the state coverage)
    heldout_episodes: int = 50  # a separate collection the held-out cases come from
    seed: int = 0  # data seed (shared by every model and trial seed)
    workers: int = 1  # collection processes inside a trial (a trial holds one CPU slot by default)


@dataclass
class TrainSpec:
    steps: int = 500
    batch_size: int = 64
    lr: float = 1e-3  # CPU-sized default; the paper's 5e-5 goes with batch 128 × 10 epochs
    weight_decay: float = 1e-3
    warmup_frac: float = 0.01
    grad_clip: float = 1.0
    log_every: int = 50
    num_frames: int = 4  # frames per training window (LeWM: 4)
    compile: bool = False


@dataclass
class PlannerSpec:
    name: str = "cem"  # "cem" | "mppi"
    samples: int = 300  # LeWM: 300
    iterations: int = 30  # LeWM released config: 30
    elites: int = 30  # LeWM: 30
    horizon: int = 5  # action blocks (LeWM: 5)
    receding: int = 5  # blocks executed before replanning (LeWM: 5)
    init_std: float = 1.0
    temperature: float = 0.1  # MPPI only
    chunk: int | None = None  # max candidates per model call (bounded memory); None = all at once
    batch_episodes: int = 50  # episodes planned together in one batched call (1 = the published per-plan timing)


@dataclass
class ConditionSpec:
    action_noise: float = 0.0  # std of Gaussian noise on executed actions
    camera_shift: float = 0.0  # pixels of view translation (2-D tasks) / camera offset (MuJoCo)
    camera_rotate: float = 0.0  # degrees
    camera_zoom: float = 1.0  # scale
    sticky_prob: float = 0.0  # probability that the previous executed action repeats
    brightness: float = 0.0  # photometric shift
    hue: float = 0.0  # photometric shift


@dataclass
class ResourcesSpec:
    cpu: int = 1
    gpu: str = "auto"  # "auto": 1 GPU if the cluster has any; "require": fail without; "never"
    gpu_fraction: float = 1.0  # below 1 packs several small trials on one GPU
    gpus_per_trial: int = 1  # above 1: one model trained over several GPUs with DDP (SIGReg all-reduced)


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
    models: list[ModelSpec] = MISSING
    seeds: list[int] = field(default_factory=lambda: [0])
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    planner: PlannerSpec = field(default_factory=PlannerSpec)
    protocol: Any = "wmbench"  # a preset name or {preset: NAME, <field>: value}
    conditions: list[ConditionSpec] = field(default_factory=lambda: [ConditionSpec()])
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
        merged = OmegaConf.merge(OmegaConf.structured(SweepConfig), raw)
        OmegaConf.resolve(merged)
        sweep: SweepConfig = OmegaConf.to_object(merged)
    except (OmegaConfBaseException, HydraException) as error:
        raise ConfigError(f"{path}: {_describe(error)}") from None
    _check_names(sweep, path)
    return sweep


def _describe(error: Exception) -> str:
    """One line naming the bad key, from an OmegaConf/Hydra error."""
    key = getattr(error, "full_key", None)
    message = str(error).splitlines()[0]
    if key:
        return f"bad key {key!r}: {message}"
    return message


def _check_names(sweep: SweepConfig, path: Path) -> None:
    for i, task in enumerate(sweep.tasks):
        if task.name not in TASKS:
            raise ConfigError(f"{path}: tasks[{i}].name {task.name!r} is unknown; known tasks: {', '.join(TASKS)}")
    known_models = [*MODELS, *CONTROLLERS]
    for i, model in enumerate(sweep.models):
        if model.name not in known_models:
            raise ConfigError(
                f"{path}: models[{i}].name {model.name!r} is unknown; known models: {', '.join(known_models)}"
            )
    if sweep.planner.name not in ("cem", "mppi"):
        raise ConfigError(f"{path}: planner.name {sweep.planner.name!r} is unknown; known planners: cem, mppi")
    if sweep.resources.gpu not in ("auto", "require", "never"):
        raise ConfigError(f"{path}: resources.gpu {sweep.resources.gpu!r} must be one of auto, require, never")
    if sweep.data.policy not in ("expert", "random"):
        raise ConfigError(f"{path}: data.policy {sweep.data.policy!r} must be expert or random")
    for i, condition in enumerate(sweep.conditions):
        try:
            Condition(**dataclasses.asdict(condition))
        except ValueError as error:
            raise ConfigError(f"{path}: conditions[{i}]: {error}") from None
    try:
        resolve_protocol(sweep.protocol)
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None
    for key in sweep.search.grid:
        if not key.startswith(GRID_ROOTS):
            raise ConfigError(f"{path}: search.grid key {key!r} must start with one of {', '.join(GRID_ROOTS)}")
        if key.startswith("protocol.") and key.removeprefix("protocol.") not in PROTOCOL_FIELDS:
            raise ConfigError(f"{path}: search.grid key {key!r}: not a protocol field ({', '.join(PROTOCOL_FIELDS)})")


def protocol_of(sweep: SweepConfig) -> Protocol:
    """The sweep's protocol with presets applied (task defaults still unresolved)."""
    return resolve_protocol(OmegaConf.to_container(OmegaConf.create({"p": sweep.protocol}))["p"])


def expand_trials(sweep: SweepConfig) -> list[dict[str, Any]]:
    """Every (task × model × seed × grid point) as a plain, JSON-able trial config."""
    grid_keys = list(sweep.search.grid)
    grid_points = list(itertools.product(*sweep.search.grid.values())) or [()]
    protocol = dataclasses.asdict(protocol_of(sweep))
    trials = []
    for task, model, seed, point in itertools.product(sweep.tasks, sweep.models, sweep.seeds, grid_points):
        trial = {
            "sweep": sweep.name,
            "task": {**dataclasses.asdict(task), "version": _task_version(task.name)},
            "model": dataclasses.asdict(model),
            "seed": seed,
            "data": dataclasses.asdict(sweep.data),
            "train": dataclasses.asdict(sweep.train),
            "planner": dataclasses.asdict(sweep.planner),
            "protocol": dict(protocol),
            "conditions": [dataclasses.asdict(c) for c in sweep.conditions],
            "diagnostics": sweep.diagnostics,
        }
        for key, value in zip(grid_keys, point, strict=True):
            set_dotted(trial, key, value)
            if key.startswith("protocol."):  # a different protocol is named apart, not just hashed apart
                trial["protocol"]["name"] += f"+{key.removeprefix('protocol.')}={value}"
        trials.append(trial)
    _name_variants(trials)
    return trials


def _name_variants(trials: list[dict[str, Any]]) -> None:
    """Set each trial's ``variant``: the settings, other than the seed, that differ between trials of
    one model on one task (e.g. ``planner.name=mppi``), so a leaderboard never averages them as seeds."""
    # The protocol is left out: the leaderboard already tables each protocol apart.
    flat = [_flatten({k: v for k, v in t.items() if k not in ("seed", "sweep", "protocol")}) for t in trials]
    for entry in {(t["task"]["name"], t["model"]["name"]) for t in trials}:
        mine = [i for i, t in enumerate(trials) if (t["task"]["name"], t["model"]["name"]) == entry]
        keys = sorted({k for i in mine for k in flat[i]})
        differing = [k for k in keys if len({json.dumps(flat[i].get(k), sort_keys=True) for i in mine}) > 1]
        for i in mine:
            parts = (f"{k.removeprefix('model.overrides.')}={flat[i].get(k)}" for k in differing)
            trials[i]["variant"] = ", ".join(parts)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay whole."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _task_version(name: str) -> str:
    """The task's code version, part of the trial id: a changed task never resumes from old rows."""
    try:
        return task_class(name).version
    except ImportError:  # an optional dependency is missing: the trial will fail and say so
        return "unavailable"


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(t, "model.overrides.sigreg_weight", 0.1)``; model.* keys go to overrides."""
    parts = dotted.split(".")
    if parts[0] == "model" and parts[1] not in ("name", "size", "overrides"):
        parts = ["model", "overrides", *parts[1:]]
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
