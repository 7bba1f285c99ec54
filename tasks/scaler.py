"""Per-dataset action standardisation, as the authors do (REFERENCE.md, "Planning and evaluation protocol").

Models train on standardised actions and planners search in the same units, so CEM's
initial std of 1 means one dataset standard deviation on every action dimension. Plans
are mapped back to the task's raw units only at execution (:meth:`ActionScaler.inverse`).

The statistics are per raw action dimension; an action block of ``frameskip`` raw
actions laid out ``(k a)`` is scaled by the same statistics tiled ``frameskip`` times.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)
MIN_STD = 1e-6  # a dimension that never varies keeps unit scale instead of dividing by zero


@dataclass(frozen=True)
class ActionScaler:
    """Mean and std of each raw action dimension; maps raw blocks to standardised ones and back."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean and std must be equally long and non-empty, got {self.mean} and {self.std}")
        if not all(s > 0 for s in self.std):
            raise ValueError(f"every std must be positive, got {self.std}")

    @classmethod
    def fit(cls, actions: np.ndarray) -> ActionScaler:
        """Fit on raw actions (..., A): the training data's per-dimension mean and std (a StandardScaler)."""
        flat = np.asarray(actions, dtype=np.float64).reshape(-1, actions.shape[-1])  # (N, A)
        if not len(flat):
            raise ValueError("cannot fit an action scaler on no actions")
        std = flat.std(axis=0)
        std = np.where(std > MIN_STD, std, 1.0)
        return cls(tuple(float(m) for m in flat.mean(axis=0)), tuple(float(s) for s in std))

    @classmethod
    def identity(cls, action_dim: int) -> ActionScaler:
        """Raw units: for controllers and tests that plan in the task's own action box."""
        return cls((0.0,) * action_dim, (1.0,) * action_dim)

    @property
    def action_dim(self) -> int:
        return len(self.mean)

    def transform(self, blocks: Array) -> Array:
        """Raw action blocks (..., k·A) -> standardised ones of the same shape."""
        mean, std = self._tiled(blocks)
        return (blocks - mean) / std

    def inverse(self, blocks: Array) -> Array:
        """Standardised action blocks (..., k·A) -> raw ones: what is executed."""
        mean, std = self._tiled(blocks)
        return blocks * std + mean

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ActionScaler:
        return cls(tuple(float(m) for m in values["mean"]), tuple(float(s) for s in values["std"]))

    def _tiled(self, blocks: Array) -> tuple[Array, Array]:
        width = blocks.shape[-1]
        if width % self.action_dim:
            raise ValueError(f"an action block of width {width} is not a whole number of {self.action_dim}-D actions")
        repeats = width // self.action_dim  # the block's layout is (k a): k raw actions of A dims each
        mean, std = np.tile(self.mean, repeats), np.tile(self.std, repeats)
        if isinstance(blocks, torch.Tensor):
            return (
                torch.as_tensor(mean, dtype=blocks.dtype, device=blocks.device),
                torch.as_tensor(std, dtype=blocks.dtype, device=blocks.device),
            )
        return mean.astype(blocks.dtype), std.astype(blocks.dtype)
