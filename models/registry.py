"""The model zoo: one line per entry, name -> "module:builder".

An entry's module exposes its size presets as ``SIZES: dict[str, <Config>]`` and a builder

    build(size: str, image_size: int, action_dim: int, *, history: int, **overrides) -> WorldModel

``size`` names a preset ("tiny" for CPU tests, "paper" for the published configuration);
``image_size`` and ``action_dim`` (one action block: frameskip × the env's action width) come
from the task; ``history`` is required: the frames of context the task's protocol gives the
planner (LeWM: 3 on Push-T, 1 on Two-Room), which a model whose state summarises the past
(Dreamer's RSSM, PLDM's Markov predictor) takes and ignores (its ``history`` is 1);
``overrides`` replace fields of the preset, and one that names no field raises ValueError.
Entries are imported lazily, so the zoo can name baselines without importing them.

A model from outside the repository joins without an edit here: a sweep names it by import
path (``models: [{name: "mypkg.world_model:build"}]``), or an installed package registers it
under the ``wmbench.models`` entry-point group (``[project.entry-points."wmbench.models"]
mywm = "mypkg.world_model:build"``). Either way its module keeps the contract above (``SIZES``
and the builder) and :func:`models.contract.contract_problems` checks it before a sweep runs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType
from typing import Any

from models.world_model import WorldModel, check_world_model

MODELS: dict[str, str] = {
    "lewm": "models.lewm.model:build",
    "dino_wm": "models.dino_wm.model:build",
    "dreamer": "models.dreamer.model:build",
    "pldm": "models.pldm.model:build",
    "swm_lewm": "models.lewm.swm:build",  # LeWM in the authors' layout; loads their checkpoints
}


ENTRY_POINT_GROUP = "wmbench.models"


def entry_path(name: str) -> str | None:
    """``module:builder`` for a zoo name, an import path or an installed entry point; None if ``name`` is none."""
    if name in MODELS:
        return MODELS[name]
    if ":" in name:
        return name
    registered = {point.name: point.value for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return registered.get(name)


def is_model(name: str) -> bool:
    """Whether ``name`` names a world model (zoo entry, import path or entry point), without importing it."""
    return entry_path(name) is not None


def _entry(name: str) -> tuple[ModuleType, str]:
    """The module of model ``name`` and its builder's name; a name that resolves to nothing usable raises,
    naming what is missing and the known models."""
    path = entry_path(name)
    if path is None:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}, "
            f"an import path 'package.module:build', or an entry point of group {ENTRY_POINT_GROUP!r}"
        )
    module_name, _, builder = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"model {name!r}: module {module_name!r} cannot be imported ({error})") from None
    if not callable(getattr(module, builder, None)):
        raise ValueError(f"model {name!r}: module {module_name!r} has no builder {builder!r}")
    if not isinstance(getattr(module, "SIZES", None), dict) or not module.SIZES:
        raise ValueError(f"model {name!r}: module {module_name!r} must list its size presets in SIZES (a dict)")
    return module, builder


def model_sizes(name: str) -> tuple[str, ...]:
    """The size presets zoo entry ``name`` offers, e.g. ("tiny", "paper"), without building anything."""
    module, _ = _entry(name)
    return tuple(module.SIZES)


def size_preset(name: str, size: str) -> Any:
    """Zoo entry ``name``'s config dataclass at ``size``, as its ``SIZES`` holds it (before the task's fields)."""
    module, _ = _entry(name)
    if size not in module.SIZES:
        raise ValueError(f"unknown size {size!r} for model {name!r}; sizes: {', '.join(module.SIZES)}")
    return module.SIZES[size]


def build_model(
    name: str, size: str, image_size: int, action_dim: int, *, history: int, **overrides: Any
) -> WorldModel:
    """Build zoo entry ``name`` at ``size`` for the task's image size, action block and ``history`` frames."""
    if not isinstance(history, int) or history < 1:
        raise ValueError(f"history must be a positive number of frames, got {history!r}")
    module, builder = _entry(name)
    model = getattr(module, builder)(size, image_size=image_size, action_dim=action_dim, history=history, **overrides)
    return check_world_model(model, name)
