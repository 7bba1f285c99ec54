"""Size presets shared by every zoo entry: a named config plus user overrides, checked.

Every entry exposes its presets as ``SIZES: dict[str, <Config>]`` ("tiny" for CPU tests,
"paper" for the published configuration) and its builder resolves them here; an override
must name a field of the model's config dataclass, and a wrong name is a user error.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

Config = TypeVar("Config")


def resolve_config(model: str, sizes: dict[str, Config], size: str, **fields: Any) -> Config:
    """The ``size`` preset of ``model`` with ``fields`` replaced; unknown sizes or fields raise ValueError."""
    if size not in sizes:
        raise ValueError(f"{model} size {size!r} is unknown; known sizes: {', '.join(sizes)}")
    preset = sizes[size]
    known = {field.name for field in dataclasses.fields(preset)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{model} override {unknown[0]!r} is not a config field; fields: {', '.join(sorted(known))}")
    return dataclasses.replace(preset, **fields)
