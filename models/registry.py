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
"""

from __future__ import annotations

import importlib
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


def _entry(name: str) -> tuple[ModuleType, str]:
    """The module of zoo entry ``name`` and its builder's name; unknown names raise with the known ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    module_name, builder = MODELS[name].split(":")
    return importlib.import_module(module_name), builder


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
