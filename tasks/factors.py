"""Factors of variation: what a task lets a condition change in how its world looks.

A task declares its variation space in ``Task.factors``: a factor's name (one of the
condition fields :data:`FACTORS`) -> a :class:`Factor`, which says what the factor changes
in that task, its nominal value, and the box its values are drawn from. A condition sets a
factor's *strength* s in [0, 1], and each evaluation case renders its world with

    value = nominal + s · (draw − nominal),    draw ~ Uniform[low, high],

``draw`` taken from a generator seeded by the case's seed and the factor's name
(:func:`draw_factors`). So strength 0 is the clean world, strength 1 a value anywhere in the
box, and every strength, model and condition of one case moves along the same line, from
the nominal value towards the same draw: a factor condition is paired with clean, case for
case, and its curve over strengths is one curve. Only what the camera sees changes; the
physics never do. Values are applied by the env (``TaskEnv.set_factors``).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

# The condition fields a task may declare as factors (tasks.conditions.Condition has one field each).
FACTORS = ("agent_colour", "object_colour", "background_colour", "agent_size", "lighting")


@dataclass(frozen=True)
class Factor:
    """One factor of variation of a task: what it changes there, its nominal value and the box draws come from.

    ``colour``: an RGB triple in [0, 1] (draws anywhere in the RGB cube); ``scale``: one
    multiplier of a size or an intensity (nominal 1).
    """

    kind: Literal["colour", "scale"]
    what: str  # what the factor changes in this task, e.g. "the T block's colour"
    nominal: tuple[float, ...]  # the value the task renders with when the factor is not varied
    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        sizes = {"colour": 3, "scale": 1}
        if self.kind not in sizes:
            raise ValueError(f"a factor's kind must be one of {', '.join(sizes)}, got {self.kind!r}")
        if not len(self.nominal) == len(self.low) == len(self.high) == sizes[self.kind]:
            raise ValueError(f"a {self.kind} factor has {sizes[self.kind]} values in nominal, low and high")
        if not np.all((np.array(self.low) <= self.nominal) & (np.array(self.nominal) <= self.high)):
            raise ValueError(f"a factor's nominal value {self.nominal} must lie in [{self.low}, {self.high}]")

    @classmethod
    def colour(cls, what: str, rgb: Sequence[float]) -> Factor:
        """A colour factor with nominal ``rgb`` (in [0, 1]); draws come from the whole RGB cube."""
        return cls("colour", what, tuple(float(c) for c in rgb), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    @classmethod
    def scale(cls, what: str, low: float, high: float) -> Factor:
        """A multiplier with nominal 1; draws come from [low, high]."""
        return cls("scale", what, (1.0,), (float(low),), (float(high),))

    def value(self, strength: float, rng: np.random.Generator) -> np.ndarray:
        """``nominal + strength · (draw − nominal)`` with ``draw`` uniform in the box: float64, one value per dim."""
        nominal = np.array(self.nominal)
        return nominal + strength * (rng.uniform(self.low, self.high) - nominal)


def factor_rng(case_seed: int, name: str) -> np.random.Generator:
    """The generator a case's draw of factor ``name`` comes from: the same for every strength and every model."""
    return np.random.default_rng([int(case_seed), zlib.crc32(name.encode())])


def draw_factors(
    declared: Mapping[str, Factor], strengths: Mapping[str, float], case_seed: int
) -> dict[str, np.ndarray]:
    """The values of the factors at ``strengths`` (name -> s) for one case, from its seed; names must be declared."""
    return {name: declared[name].value(strength, factor_rng(case_seed, name)) for name, strength in strengths.items()}
