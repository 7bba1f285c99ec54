"""LeWM's predictor parts, shared by the zoo: BatchNorm projector, action encoder, AdaLN-zero causal transformer.

LeWM (REFERENCE.md, LeWM "Method") and the PLDM of LeWM's comparison (REFERENCE.md, "The
authors' evaluation code") use the same parts: one latent per frame through a BatchNorm MLP
projector, action blocks embedded by a Conv1d(k=1) and an MLP with SiLU, and a causal
transformer that takes the actions in every block by AdaLN-zero.
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from models.blocks.vit import ConditionedBlock

# A ViT encoder plus this predictor at CPU size (ours): trains in minutes at 64×64. LeWM's ``tiny``
# preset and PLDM's ``vit_tiny`` both take these fields, so the two stay the same network.
CPU_TINY_SIZES: dict[str, int | str] = {
    "image_size": 64,
    "patch_size": 8,
    "encoder_width": 96,
    "encoder_depth": 3,
    "encoder_heads": 3,
    "encoder_mlp_dim": 192,
    # From noise, a 3-layer ViT trained for minutes does not learn where a patch sits
    # (agent-position probe R² -0.03); from a sincos grid it reads it (0.96).
    "encoder_pos_init": "sincos",
    "latent_dim": 64,
    "projector_hidden": 256,
    "predictor_depth": 2,
    "predictor_heads": 4,
    "predictor_dim_head": 24,
    "predictor_width": 96,
    "predictor_mlp_dim": 192,
    "action_mlp_ratio": 2,
}


class Projector(nn.Module):
    """MLP with BatchNorm1d: Linear → BatchNorm1d → GELU → Linear, over any leading dims."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_dim) -> (..., out_dim); BatchNorm's batch is every leading position."""
        flat = x.reshape(-1, x.shape[-1])  # (prod(...), in_dim)
        return self.net(flat).reshape(*x.shape[:-1], -1)


class ActionEncoder(nn.Module):
    """Embeds each action block: Conv1d(k=1) over time, then an MLP with SiLU."""

    def __init__(self, action_dim: int, conv_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(action_dim, conv_dim, kernel_size=1)
        self.mlp = nn.Sequential(nn.Linear(conv_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, actions: Tensor) -> Tensor:
        """(B, T, A) -> (B, T, out_dim); T may be 0 (no past actions before a history of one frame)."""
        if actions.shape[1] == 0:
            return actions.new_zeros(actions.shape[0], 0, self.mlp[-1].out_features)
        smoothed = rearrange(self.conv(rearrange(actions, "b t a -> b a t")), "b c t -> b t c")
        return self.mlp(smoothed)


class CausalPredictor(nn.Module):
    """Causal transformer over one latent per frame with AdaLN-zero action conditioning in every block.

    ``dropout`` acts inside attention and MLP, ``emb_dropout`` on the input embeddings (the
    authors' library: 0.1 and 0). ``norm_eps`` and ``branch_norm`` pick the blocks' layout
    (:class:`~models.blocks.vit.ConditionedBlock`; the authors' library: 1e-6 and True).
    """

    def __init__(
        self,
        latent_dim: int,
        width: int,
        depth: int,
        heads: int,
        dim_head: int,
        mlp_dim: int,
        dropout: float,
        emb_dropout: float,
        max_frames: int,
        norm_eps: float = 1e-5,
        branch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.input = nn.Linear(latent_dim, width) if latent_dim != width else nn.Identity()
        self.pos_embed = nn.Parameter(torch.randn(1, max_frames, width) * 0.02)
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.blocks = nn.ModuleList(
            ConditionedBlock(width, heads, mlp_dim, dropout, dim_head, norm_eps=norm_eps, branch_norm=branch_norm)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, latents: Tensor, action_embeddings: Tensor) -> Tensor:
        """latents (B, T, D) and action embeddings (B, T, width) -> (B, T, width); output t sees frames <= t."""
        return self.run(latents, [block.modulation(action_embeddings) for block in self.blocks])

    def run(self, latents: Tensor, modulations: list[Tensor]) -> Tensor:
        """:meth:`forward` given each block's AdaLN modulation of the action embeddings, (B, T, 6·width) per block."""
        frames = latents.shape[1]
        if frames > self.max_frames:
            raise ValueError(f"the predictor has positions for {self.max_frames} frames, got {frames}")
        x = self.emb_dropout(self.input(latents) + self.pos_embed[:, :frames])  # (B, T, width)
        for block, modulation in zip(self.blocks, modulations, strict=True):
            x = block.modulated(x, modulation, is_causal=True)
        return self.norm(x)

    @classmethod
    def from_config(cls, config: Any, **layout: Any) -> CausalPredictor:
        """The predictor a model config names by its ``predictor_*`` fields, ``latent_dim`` and ``max_frames``
        (LeWM's and its stable-worldmodel layout's); ``layout`` passes ``norm_eps`` and ``branch_norm``."""
        return cls(
            config.latent_dim,
            config.predictor_width,
            config.predictor_depth,
            config.predictor_heads,
            config.predictor_dim_head,
            config.predictor_mlp_dim,
            config.predictor_dropout,
            config.predictor_emb_dropout,
            config.max_frames,
            **layout,
        )

    def imagine(self, latents: Tensor, action_embeddings: Tensor, head: nn.Module, history: int) -> Tensor:
        """Roll out autoregressively: latents (B, h, D), embeddings (B, h-1+H, width) of the blocks -> (B, H, D).

        Block t moves frame t to t+1. Each step runs the predictor over the last ``history``
        frames and their blocks, and only the last token, the one that predicts the next frame,
        goes through ``head`` (the model's output projector).
        """
        horizon = action_embeddings.shape[1] - latents.shape[1] + 1
        # A block's AdaLN modulation depends on the actions alone, so each block makes it once per rollout for every
        # block of actions (not once per step and window position), frame-major so that a step's window is one
        # contiguous slice: on a CPU, strided inputs made the elementwise kernels ~5× slower.
        by_frame = rearrange(action_embeddings, "b t w -> t b w").contiguous()  # (h-1+H, B, width)
        modulations = [block.modulation(by_frame) for block in self.blocks]  # (h-1+H, B, 6·width) each
        frames = list(rearrange(latents, "b t d -> t b d"))  # h × (B, D)
        for _ in range(horizon):
            window = slice(max(0, len(frames) - history), len(frames))
            seen = torch.stack(frames[window], dim=1)  # (B, L, D)
            conditions = [rearrange(m[window], "t b w -> b t w").contiguous() for m in modulations]  # (B, L, 6·width)
            hidden = self.run(seen, conditions)[:, -1]  # (B, width)
            frames.append(head(hidden))  # (B, D)
        return torch.stack(frames[-horizon:], dim=1)  # (B, H, D)
