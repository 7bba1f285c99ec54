"""The model zoo: one line per entry, name -> "module:builder".

A builder is ``build(size, image_size, action_dim, history, **overrides) -> WorldModel``:
``size`` picks a preset ("tiny" for CPU tests, "paper" for the published configuration);
``history`` is the frames of context the task's protocol gives the planner (LeWM: 3 on
Push-T, 1 on Two-Room); a model whose state summarises the past (an RSSM) may ignore it.
Entries are imported lazily, so the zoo can name baselines without importing them.
"""

from __future__ import annotations

import importlib
from typing import Any

from models.world_model import WorldModel

MODELS: dict[str, str] = {
    "lewm": "models.lewm.model:build",
    "dino_wm": "models.dino_wm.model:build",
    "dreamer": "models.dreamer.model:build",
    "pldm": "models.pldm.model:build",
}


def build_model(
    name: str, size: str, image_size: int, action_dim: int, history: int = 1, **overrides: Any
) -> WorldModel:
    """Build a zoo model by name; unknown names raise with the list of known ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    module_name, attr = MODELS[name].split(":")
    builder = getattr(importlib.import_module(module_name), attr)
    return builder(size=size, image_size=image_size, action_dim=action_dim, history=history, **overrides)
