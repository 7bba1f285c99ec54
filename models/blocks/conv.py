"""Convolutional blocks shared by the zoo: DreamerV3's stride-2 image encoder and its mirror decoder.

Hafner et al., 2023 (DreamerV3): kernel-4 stride-2 convolutions, each followed by a
normalisation and SiLU, halving the frame down to a 4–7 pixel map while the channels double
per stage up to 8 × depth. Dreamer's RSSM embeds frames with the encoder and reconstructs
them with the decoder; PLDM reuses the encoder with a linear projection on top.
"""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn


def conv_stages(image_size: int) -> int:
    """Stride-2 stages that halve ``image_size`` down to a 4–7 pixel map (64 -> 4, 96 -> 6, 224 -> 7)."""
    stages = 0
    while image_size % 2 == 0 and image_size // 2 >= 4:
        image_size //= 2
        stages += 1
    return stages


class ConvEncoder(nn.Module):
    """Stride-2 convolutions (kernel 4), each followed by layer norm and SiLU, then flattened.

    Channels double per stage from ``depth``, up to 8 × depth.
    """

    def __init__(self, image_size: int, depth: int, stages: int | None = None) -> None:
        super().__init__()
        stages = conv_stages(image_size) if stages is None else stages
        if stages < 1 or image_size % 2**stages:
            raise ValueError(f"image_size {image_size} must be divisible by 2**cnn_stages = {2**stages}")
        self.widths = [depth * 2 ** min(stage, 3) for stage in range(stages)]
        layers, channels = [], 3
        for width in self.widths:
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.GroupNorm(1, width), nn.SiLU()]
            channels = width
        self.net = nn.Sequential(*layers)
        self.out_channels = channels
        self.out_size = image_size // 2**stages
        self.embed_dim = channels * self.out_size**2

    def forward(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, E)."""
        return self.net(pixels - 0.5).flatten(1)


class ConvDecoder(nn.Module):
    """The encoder's mirror: a linear map to the smallest feature map, then stride-2 transposed convs."""

    def __init__(self, feature_dim: int, encoder: ConvEncoder) -> None:
        super().__init__()
        self.start_channels, self.start_size = encoder.out_channels, encoder.out_size
        self.project = nn.Linear(feature_dim, encoder.embed_dim)
        layers, channels = [], encoder.out_channels
        for width in reversed(encoder.widths[:-1]):
            layers += [nn.ConvTranspose2d(channels, width, 4, stride=2, padding=1), nn.GroupNorm(1, width), nn.SiLU()]
            channels = width
        layers.append(nn.ConvTranspose2d(channels, 3, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        """(B, F) -> reconstructed frames (B, 3, H, W), centred on 0.5 like the input."""
        grid = rearrange(
            self.project(features), "b (c h w) -> b c h w", c=self.start_channels, h=self.start_size, w=self.start_size
        )
        return self.net(grid) + 0.5
