"""Evaluation conditions: seeded perturbations of what is executed and what is seen.

A condition changes the world between the controller and the env (action noise)
or between the env and the controller (camera shift); it never changes the cases,
so a perturbed condition is always paired with the clean one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Condition:
    """A named, parameterised evaluation condition recorded in every result row."""

    action_noise: float = 0.0  # std of Gaussian noise added to each executed raw action
    camera_shift: float = 0.0  # view translation in pixels (2-D tasks: a shifted crop of the frame)

    @property
    def name(self) -> str:
        parts = [f"{key}={value:g}" for key, value in vars(self).items() if value]
        return ",".join(parts) or "clean"

    def execute(self, action: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The action the env actually receives, clipped to the action space."""
        if self.action_noise:
            action = action + rng.normal(0.0, self.action_noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def observe(self, pixels: np.ndarray) -> np.ndarray:
        """Frames (..., H, W, 3) as the moved camera sees them: translated diagonally, edges replicated."""
        shift = int(round(self.camera_shift))
        if not shift:
            return pixels
        height, width = pixels.shape[-3:-1]
        pad = [(0, 0)] * (pixels.ndim - 3) + [(abs(shift), abs(shift))] * 2 + [(0, 0)]
        padded = np.pad(pixels, pad, mode="edge")
        top = abs(shift) - shift  # a positive shift moves the content down and right
        return padded[..., top : top + height, top : top + width, :]
