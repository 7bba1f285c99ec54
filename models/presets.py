"""Size presets shared by every zoo builder: a named config plus user overrides, checked.

Every builder in the zoo takes ``build(size, image_size, action_dim, **overrides)``; an override
must name a field of the model's config dataclass, and a wrong name is a user error.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

Config = TypeVar("Config")


def resolve_config(model: str, presets: dict[str, Config], size: str, **fields: Any) -> Config:
    """The ``size`` preset of ``model`` with ``fields`` replaced; unknown sizes or fields raise."""
    if size not in presets:
        raise ValueError(f"{model} size {size!r} is unknown; known sizes: {', '.join(presets)}")
    preset = presets[size]
    known = {field.name for field in dataclasses.fields(preset)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{model} override {unknown[0]!r} is not a config field; fields: {', '.join(sorted(known))}")
    return dataclasses.replace(preset, **fields)
