"""ImageNet pixel statistics and the per-channel normalisation by them (LeWM's and DINO-WM's encoders)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetNormalise(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (images − mean) / std per channel; the statistics are buffers, not weights."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """(..., 3, H, W) -> (..., 3, H, W)."""
        return (images - self.mean) / self.std
