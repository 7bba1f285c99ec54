"""LeWorldModel (LeWM): a JEPA world model trained end to end from pixels with SIGReg.

Maes, Le Lidec, Scieur, LeCun, Balestriero, arXiv 2603.19312 (2026); numbers from
REFERENCE.md. A ViT encodes each frame to one latent (its CLS token through a
BatchNorm projector). A causal transformer predicts the next frame's latent from the
history of latents, with the action block entering every block by AdaLN-zero. The loss
is the prediction error plus λ·SIGReg on the encoder's embeddings; SIGReg alone keeps
the latents from collapsing, so there is no stop-gradient, no EMA target and no decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from models.blocks.imagenet import ImageNetNormalise
from models.blocks.predictor import CPU_TINY_SIZES, ActionEncoder, CausalPredictor, Projector
from models.blocks.sigreg import SIGReg
from models.blocks.vit import ViTEncoder
from models.presets import resolve_config
from models.world_model import RolloutStart, WorldModel


@dataclass(frozen=True)
class LeWMConfig:
    """LeWM's hyperparameters; defaults are the published ones (REFERENCE.md, LeWM "Method")."""

    # Encoder: ViT-Tiny trained from scratch at 224×224.
    image_size: int = 224
    patch_size: int = 14  # ViT-Tiny
    encoder_width: int = 192  # ViT-Tiny
    encoder_depth: int = 12  # ViT-Tiny
    encoder_heads: int = 3  # ViT-Tiny
    encoder_mlp_dim: int = 768  # ViT-Tiny's MLP ratio 4
    encoder_pos_init: str = "random"  # "sincos": start positions from a 2-D sine-cosine grid (ours)
    # Latent: one token of latent_dim per frame, via projector MLPs 192→2048→192 with BatchNorm1d
    # (a LayerNorm there stops SIGReg from working, per the paper).
    latent_dim: int = 192
    projector_hidden: int = 2048
    # Predictor: causal transformer, 6 layers, 16 heads × 64, width 192, MLP 2048, dropout 0.1
    # inside attention and MLP only.
    predictor_depth: int = 6
    predictor_heads: int = 16
    predictor_dim_head: int = 64
    predictor_width: int = 192
    predictor_mlp_dim: int = 2048
    predictor_dropout: float = 0.1  # in attention and MLP; paper's ablation: 0 → 78%, 0.1 → 96%, 0.2 → 85% on Push-T
    predictor_emb_dropout: float = 0.0  # on the input embeddings: the authors' library (emb_dropout 0)
    max_frames: int = 16  # learned positional embeddings for windows up to this long (ours)
    # Action encoder: Conv1d(k=1) then an MLP with SiLU over the action block.
    action_dim: int = 10  # A = frameskip × env action_dim (Push-T: 5 × 2); set by build()
    action_conv_dim: int = 10  # Conv1d output width (ours)
    action_mlp_ratio: int = 4  # hidden width = ratio × predictor_width (ours)
    # Loss: L = MSE(ẑ_{t+1}, z_{t+1}) + λ·SIGReg(Z).
    sigreg_weight: float = 0.1  # λ: paper 0.1 (released config 0.09)
    sigreg_directions: int = 1024  # LeJEPA / the authors' library
    sigreg_knots: int = 17  # LeJEPA / the authors' library
    # Frames of context: 3 for Push-T and Cube, 1 for Two-Room; build() sets the protocol's.
    history: int = 3


SIZES: dict[str, LeWMConfig] = {
    # ~0.5M parameters: trains on a CPU in minutes at 64×64 (REFERENCE.md, "What a CPU budget buys").
    "tiny": LeWMConfig(
        **CPU_TINY_SIZES,
        # Ours: the CPU preset keeps the embedding dropout its README figures were measured with;
        # the published recipe (paper below, the authors' library) has none there.
        predictor_emb_dropout=0.1,
    ),
    # The published configuration (~18M parameters counting the config; advertised ~15M).
    "paper": LeWMConfig(),
}


class LeWM(WorldModel):
    """LeWM: encode frames to one latent each, predict the next latent from history and actions."""

    def __init__(self, cfg: LeWMConfig) -> None:
        super().__init__()
        self.config = cfg
        self.history = cfg.history
        self.encoder = ViTEncoder.from_config(cfg, **self.encoder_layout(cfg))
        self.projector = Projector(cfg.encoder_width, cfg.projector_hidden, cfg.latent_dim)
        self.action_encoder = ActionEncoder(
            cfg.action_dim, cfg.action_conv_dim, self.action_hidden(cfg), cfg.predictor_width
        )
        self.predictor = CausalPredictor.from_config(cfg, **self.predictor_layout(cfg))
        self.predictor_projector = Projector(cfg.predictor_width, cfg.projector_hidden, cfg.latent_dim)
        self.sigreg = SIGReg(cfg.sigreg_directions, cfg.sigreg_knots)  # harness.trial.distributed turns on all_reduce
        self.normalise = ImageNetNormalise()

    # Layout hooks: LeWM's own blocks take their defaults; a subclass in another codebase's layout
    # (models/lewm/swm.py) overrides these three, and nothing else of the method changes.
    def encoder_layout(self, cfg: LeWMConfig) -> dict[str, Any]:
        """Options of the ViT encoder that the config does not name (default: none)."""
        return {}

    def action_hidden(self, cfg: LeWMConfig) -> int:
        """The action encoder's hidden width: ``action_mlp_ratio`` × the predictor's width."""
        return cfg.action_mlp_ratio * cfg.predictor_width

    def predictor_layout(self, cfg: LeWMConfig) -> dict[str, Any]:
        """Options of the predictor's blocks that the config does not name (default: none)."""
        return {}

    @property
    def tokens_per_frame(self) -> int:
        return 1

    def encode(self, pixels: Tensor) -> Tensor:
        """Frames (B, T, 3, H, W) in [0, 1] -> latents (B, T, 1, D): the ViT's CLS token through the projector."""
        batch = pixels.shape[0]
        images = self.normalise(rearrange(pixels, "b t c h w -> (b t) c h w"))
        cls = self.encoder(images)[:, 0]  # (B·T, width)
        latents = self.projector(cls)  # (B·T, D)
        return rearrange(latents, "(b t) d -> b t 1 d", b=batch)

    def predict(self, z_hist: Tensor, actions: Tensor) -> Tensor:
        """Latents (B, T, 1, D) and action blocks (B, T, A) -> predicted next latents (B, T, 1, D), causally."""
        latents = rearrange(z_hist, "b t 1 d -> b t d")
        hidden = self.predictor(latents, self.action_encoder(actions))  # (B, T, width)
        return rearrange(self.predictor_projector(hidden), "b t d -> b t 1 d")

    def start_rollout(self, z_hist: Tensor, past_actions: Tensor) -> RolloutStart:
        """The history's latents (B, h, 1, D) and its past action blocks (B, h-1, A), embedded once per plan."""
        return RolloutStart(z_hist, past_actions, self.action_encoder(past_actions))  # embeddings (B, h-1, width)

    def rollout_from(self, start: RolloutStart, plan: Tensor) -> Tensor:
        """Imagine H latents autoregressively: plan (B, H, A) -> (B, H, 1, D).

        The plan's blocks are embedded in one call beside the past ones; each step runs the
        predictor over the last ``history`` frames and their blocks, and only the last token,
        the one that predicts the next frame, goes through the output projector. In eval mode
        (BatchNorm per position) this equals :meth:`WorldModel.rollout` over :meth:`predict`.
        """
        latents = rearrange(start.latents, "b t 1 d -> b t d")  # (B, h, D)
        blocks = torch.cat([start.past_embeddings, self.action_encoder(plan)], dim=1)  # (B, h-1+H, width)
        imagined = self.predictor.imagine(latents, blocks, self.predictor_projector, self.history)  # (B, H, D)
        return rearrange(imagined, "b t d -> b t 1 d")

    def rollout(self, z_hist: Tensor, plan: Tensor, past_actions: Tensor | None = None) -> Tensor:
        """:meth:`rollout_from` a start made of ``z_hist`` and ``past_actions`` (zeros if None)."""
        if past_actions is None:
            past_actions = plan.new_zeros(plan.shape[0], z_hist.shape[1] - 1, plan.shape[-1])
        return self.rollout_from(self.start_rollout(z_hist, past_actions), plan)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """MSE of teacher-forced next-latent prediction + λ·SIGReg of all embeddings per time step.

        A window longer than ``history + 1`` frames is cut into overlapping windows of
        ``history + 1``, so the predictor never sees more context in training than in planning.
        """
        pixels, actions = batch["pixels"], batch["actions"]
        frames = pixels.shape[1]
        if frames < 2:
            raise ValueError(f"LeWM trains on windows of at least 2 frames, got {frames}")
        z = self.encode(pixels)  # (B, T, 1, D)
        span = min(frames, self.history + 1)
        z_windows = rearrange(z.unfold(1, span, 1), "b w n d f -> (b w) f n d")  # (B·W, span, 1, D)
        action_windows = rearrange(actions.unfold(1, span, 1), "b w a f -> (b w) f a")  # (B·W, span, A)
        predicted = self.predict(z_windows[:, :-1], action_windows[:, :-1])  # (B·W, span − 1, 1, D)
        pred_loss = F.mse_loss(predicted.float(), z_windows[:, 1:].float())
        sigreg = self.sigreg(rearrange(z, "b t n d -> t (b n) d"))
        return {"loss": pred_loss + self.config.sigreg_weight * sigreg, "pred_loss": pred_loss, "sigreg": sigreg}

    def describe(self) -> dict[str, str]:
        cfg = self.config
        return {
            "encoder": f"ViT {cfg.encoder_depth}×{cfg.encoder_width} patch {cfg.patch_size}, trained from scratch",
            "sigreg_weight": str(cfg.sigreg_weight),
        }


def build(size: str, image_size: int, action_dim: int, *, history: int, **overrides: Any) -> LeWM:
    """LeWM from a size preset ("tiny", "paper") with the task's image size, action-block width and history."""
    fields = {"history": history, **overrides, "image_size": image_size, "action_dim": action_dim}
    return LeWM(resolve_config("lewm", SIZES, size, **fields))
