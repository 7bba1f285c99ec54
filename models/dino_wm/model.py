"""DINO-WM-style world model: a frozen pretrained ViT's patch features, and a ViT predictor over them.

Zhou, Pan, LeCun, Pinto, arXiv 2411.04983 (REFERENCE.md "Baselines"). Each frame is encoded
by a frozen encoder into its patch tokens (N = patches per frame: 256 for DINOv2 ViT-S/14 at
224×224, 384 wide). A ViT predictor attends over all patch tokens of the history with a
frame-causal mask (tokens of frame t see frames ≤ t); the action block is embedded and
concatenated to every patch of its frame, then projected to the predictor's width. Training
is teacher-forced L2 on the next frame's features; planning is the shared latent CEM.

The frozen encoder comes from one of two sources, recorded by ``describe()["encoder"]``:

* DINOv2 (Oquab et al., 2024) weights from a local file ``encoder_path`` — a torch-hub or timm
  state dict, ``.pth``/``.pt`` or ``.safetensors`` (dinov2.py). The architecture is read from
  the checkpoint (ViT-S/14: 12 layers, width 384, 6 heads, patch 14, CLS and optional register
  tokens, LayerScale); frames are ImageNet-normalised inside ``encode``.
* Without weights, the same architecture pretrained here in ``prepare(dataset)`` as a masked
  autoencoder on the task's own frames (``selfsup-mae-<steps>``, mae.py): 75% of patches
  masked, a small transformer decoder reconstructs their per-patch-normalised pixels (He et
  al., 2022), then the decoder is dropped and the encoder frozen. That is not DINO-WM, so its
  rows are named ``dino_wm[mae]`` (``entry_name``); only DINOv2 weights give rows named ``dino_wm``.

Proprioception is not used: the WorldModel contract gives ``encode`` pixels only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from models.blocks.imagenet import ImageNetNormalise
from models.blocks.vit import Block, frame_causal_mask
from models.dino_wm.dinov2 import DinoV2Architecture, DinoV2ViT, load_dinov2, read_checkpoint, to_hub_layout
from models.dino_wm.mae import pretrain_mae
from models.presets import resolve_config
from models.world_model import RolloutStart, WorldModel


@dataclass(frozen=True)
class DinoWMConfig:
    """Encoder source and sizes, self-supervised fallback recipe, predictor sizes."""

    image_size: int = 224
    action_dim: int = 10
    # Frozen encoder. With encoder_path, the architecture is read from the checkpoint and the
    # encoder_{dim,depth,heads} below apply only to the self-supervised fallback.
    encoder_path: str | None = None  # local DINOv2 checkpoint (torch-hub or timm layout); None: pretrain here
    encoder_image_size: int | None = 224  # frames are resized to this: (size / patch)² tokens; None: image_size
    patch_size: int = 14  # DINOv2 ViT-S/14 (a checkpoint's own patch size wins)
    encoder_dim: int = 384  # DINOv2 ViT-S
    encoder_depth: int = 12  # DINOv2 ViT-S
    encoder_heads: int = 6  # DINOv2 ViT-S (width / 64)
    # Self-supervised fallback: masked autoencoder (He et al., 2022) on the task's frames.
    selfsup_steps: int = 300  # "a few hundred steps" (wmbench)
    selfsup_batch: int = 32  # windows per step; every frame of a window is used
    selfsup_lr: float = 1e-3  # AdamW, constant (wmbench: short schedule)
    selfsup_weight_decay: float = 0.05  # MAE
    mask_ratio: float = 0.75  # MAE
    decoder_dim: int = 256  # MAE's decoder is narrow and shallow (512 × 8); smaller for a short run
    decoder_depth: int = 2
    decoder_heads: int = 8
    selfsup_seed: int = 0
    # Predictor: ViT with frame-causal attention over every patch token of the history. Sizes are
    # DINO-WM's released predictor config (not in REFERENCE.md).
    action_embed_dim: int = 10  # DINO-WM's action embedding width
    predictor_dim: int = 384  # the encoder's width (DINO-WM predicts in feature space)
    predictor_depth: int = 6  # DINO-WM
    predictor_heads: int = 16  # DINO-WM
    predictor_dim_head: int = 64  # DINO-WM
    predictor_mlp_dim: int = 2048  # DINO-WM
    predictor_dropout: float = 0.1  # as LeWM's predictor (REFERENCE.md)
    max_frames: int = 16  # learned frame positions for windows up to this long
    history: int = 3  # DINO-WM plans from 3 frames on Push-T; build() sets the protocol's


SIZES: dict[str, DinoWMConfig] = {
    "tiny": DinoWMConfig(
        encoder_image_size=None,
        patch_size=8,
        encoder_dim=64,
        encoder_depth=2,
        encoder_heads=2,
        selfsup_steps=40,
        selfsup_batch=8,
        decoder_dim=64,
        decoder_depth=1,
        decoder_heads=2,
        action_embed_dim=8,
        predictor_dim=64,
        predictor_depth=2,
        predictor_heads=4,
        predictor_dim_head=16,
        predictor_mlp_dim=128,
    ),
    "paper": DinoWMConfig(),
}


class FrameCausalPredictor(nn.Module):
    """ViT over the history's patch tokens, each frame attending to itself and earlier frames."""

    def __init__(self, config: DinoWMConfig, latent_dim: int, tokens_per_frame: int) -> None:
        super().__init__()
        c = config
        self.action_embed = nn.Linear(c.action_dim, c.action_embed_dim)  # DINO-WM: a 1×1 Conv1d, i.e. a Linear
        self.project_in = nn.Linear(latent_dim + c.action_embed_dim, c.predictor_dim)
        self.patch_pos = nn.Parameter(torch.randn(1, 1, tokens_per_frame, c.predictor_dim) * 0.02)
        self.frame_pos = nn.Parameter(torch.randn(1, c.max_frames, 1, c.predictor_dim) * 0.02)
        width, heads, mlp_dim, dim_head = c.predictor_dim, c.predictor_heads, c.predictor_mlp_dim, c.predictor_dim_head
        self.blocks = nn.ModuleList(
            [Block(width, heads, mlp_dim, c.predictor_dropout, dim_head) for _ in range(c.predictor_depth)]
        )
        self.norm = nn.LayerNorm(c.predictor_dim)
        self.project_out = nn.Linear(c.predictor_dim, latent_dim)
        self.max_frames = c.max_frames

    def forward(self, latents: Tensor, actions: Tensor) -> Tensor:
        """latents (B, T, N, D), actions (B, T, A) -> predicted next latents (B, T, N, D)."""
        return self.attend(self.embed(latents, actions))

    def embed(self, latents: Tensor, actions: Tensor) -> Tensor:
        """Each frame's input tokens: latents (B, T, N, D), actions (B, T, A) -> (B, T, N, W).

        The frame's action block is embedded and concatenated to every patch, projected to the
        predictor's width, at its patch's position; its frame position comes in :meth:`attend`.
        """
        action_tokens = repeat(self.action_embed(actions), "b t e -> b t n e", n=latents.shape[2])  # (B, T, N, E)
        return self.project_in(torch.cat([latents, action_tokens], dim=-1)) + self.patch_pos  # (B, T, N, W)

    def attend(self, tokens: Tensor, last_frame_only: bool = False) -> Tensor:
        """Tokens (B, T, N, W) at their window positions through the blocks -> next latents (B, T, N, D).

        With ``last_frame_only``, only the last frame's prediction (B, 1, N, D): the last block,
        the norm and the output projection run for its tokens alone (they see every frame).
        """
        frames, tokens_per_frame = tokens.shape[1:3]
        if frames > self.max_frames:
            raise ValueError(f"{frames} frames given to a predictor built for max_frames={self.max_frames}")
        x = rearrange(tokens + self.frame_pos[:, :frames], "b t n w -> b (t n) w")
        mask = frame_causal_mask(frames, tokens_per_frame, device=x.device)  # (T·N, T·N)
        for block in self.blocks[:-1]:
            x = block(x, mask)
        x = self.blocks[-1](x, mask, queries=tokens_per_frame if last_frame_only else None)  # (B, T·N or N, W)
        x = rearrange(self.norm(x), "b (t n) w -> b t n w", n=tokens_per_frame)
        return self.project_out(x)


class DinoWM(WorldModel):
    """Frozen patch encoder + frame-causal ViT predictor, trained by teacher-forced L2."""

    def __init__(self, config: DinoWMConfig) -> None:
        super().__init__()
        self.config = config
        self.history = config.history
        if config.encoder_path is not None:
            state = to_hub_layout(read_checkpoint(config.encoder_path))
            arch = DinoV2Architecture.of(state)
            size = self._encoder_input_size(arch.patch_size)
            self.encoder = load_dinov2(state, size)
            self.encoder_source = (
                f"dinov2:{Path(config.encoder_path).name} ({arch.depth}×{arch.dim}, patch {arch.patch_size}, "
                f"{arch.registers} registers)"
            )
        else:
            size = self._encoder_input_size(config.patch_size)
            self.encoder = DinoV2ViT(
                size, config.patch_size, config.encoder_dim, config.encoder_depth, config.encoder_heads
            )
            self.encoder_source = "untrained"
        self.encoder.requires_grad_(False).eval()
        self.encoder_image_size = size
        self.latent_dim = self.encoder.cls_token.shape[-1]
        self.predictor = FrameCausalPredictor(config, self.latent_dim, self.encoder.grid**2)
        self.normalise = ImageNetNormalise()
        self.selfsup_loss: tuple[float, float] | None = None

    def _encoder_input_size(self, patch: int) -> int:
        size = self.config.encoder_image_size
        if size is None:
            size = self.config.image_size // patch * patch
            if size == 0:
                raise ValueError(f"image_size {self.config.image_size} is smaller than the encoder's patch {patch}")
        elif size % patch:
            raise ValueError(f"encoder_image_size {size} must be a multiple of the encoder's patch size {patch}")
        return size

    @property
    def tokens_per_frame(self) -> int:
        return self.encoder.grid**2

    def train(self, mode: bool = True) -> DinoWM:
        """Switch the predictor's mode; the frozen encoder stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def _encoder_input(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> resized to the encoder's input and ImageNet-normalised."""
        if images.shape[-1] != self.encoder_image_size or images.shape[-2] != self.encoder_image_size:
            size = (self.encoder_image_size, self.encoder_image_size)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.normalise(images)

    def encode(self, pixels: Tensor) -> Tensor:
        """(B, T, 3, H, W) in [0, 1] -> frozen patch features (B, T, N, D)."""
        if self.encoder_source == "untrained":
            raise RuntimeError("dino_wm has no encoder weights: give encoder_path or call prepare(dataset) first")
        batch = pixels.shape[0]
        with torch.no_grad():
            tokens = self.encoder(self._encoder_input(rearrange(pixels, "b t c h w -> (b t) c h w")))  # (B·T, N, D)
        return rearrange(tokens, "(b t) n d -> b t n d", b=batch)

    def predict(self, z_hist: Tensor, actions: Tensor) -> Tensor:
        """(B, T, N, D), (B, T, A) -> (B, T, N, D); output t predicts frame t+1 from frames ≤ t."""
        return self.predictor(z_hist, actions)

    def start_rollout(self, z_hist: Tensor, past_actions: Tensor) -> RolloutStart:
        """The history (B, h, N, D) and its past blocks (B, h-1, A); frames 0..h-2 with their blocks made
        predictor tokens once per plan: ``past_embeddings`` (B, h-1, N, W)."""
        return RolloutStart(z_hist, past_actions, self.predictor.embed(z_hist[:, :-1], past_actions))

    def rollout_from(self, start: RolloutStart, plan: Tensor) -> Tensor:
        """Imagine H frames autoregressively: plan (B, H, A) -> (B, H, N, D), as :meth:`rollout` over :meth:`predict`.

        Each frame is made tokens once (the past ones once per plan), not at every step whose
        window it sits in; each step runs the blocks over the last ``history`` frames' tokens,
        and only the last frame's tokens, which predict the next frame, through the last block
        and the output projection.
        """
        last = self.predictor.embed(start.latents[:, -1:], plan[:, :1])  # (B, 1, N, W): the current frame
        tokens = torch.cat([start.past_embeddings, last], dim=1)  # (B, h, N, W)
        predicted = []
        for step in range(plan.shape[1]):
            z_next = self.predictor.attend(tokens[:, -self.history :], last_frame_only=True)  # (B, 1, N, D)
            predicted.append(z_next)
            if step + 1 < plan.shape[1]:
                tokens = torch.cat([tokens, self.predictor.embed(z_next, plan[:, step + 1 : step + 2])], dim=1)
        return torch.cat(predicted, dim=1)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Teacher-forced L2 between predicted and encoded next-frame patch features."""
        z = self.encode(batch["pixels"])  # (B, T, N, D), no gradient
        predicted = self.predict(z[:, :-1], batch["actions"][:, :-1])
        pred_loss = F.mse_loss(predicted.float(), z[:, 1:].float())
        return {"loss": pred_loss, "pred_loss": pred_loss.detach()}

    def prepare(self, dataset: torch.utils.data.Dataset) -> None:
        """Without DINOv2 weights, pretrain the encoder here as a masked autoencoder, then freeze it."""
        if self.encoder_source != "untrained":
            return  # DINOv2 weights, or an encoder already pretrained (e.g. restored from a checkpoint)
        c = self.config
        losses = pretrain_mae(
            self.encoder,
            dataset,
            self._encoder_input,
            steps=c.selfsup_steps,
            batch_size=c.selfsup_batch,
            lr=c.selfsup_lr,
            weight_decay=c.selfsup_weight_decay,
            mask_ratio=c.mask_ratio,
            decoder_dim=c.decoder_dim,
            decoder_depth=c.decoder_depth,
            decoder_heads=c.decoder_heads,
            seed=c.selfsup_seed,
        )
        self.encoder_source = f"selfsup-mae-{len(losses)}"
        self.selfsup_loss = (losses[0], losses[-1])

    def describe(self) -> dict[str, str]:
        facts = {"encoder": self.encoder_source, "encoder_frozen": "true"}
        if self.selfsup_loss is not None:
            facts["selfsup_loss"] = f"{self.selfsup_loss[0]:.4f}->{self.selfsup_loss[1]:.4f}"
        return facts

    def entry_name(self, registered: str) -> str:
        """``registered`` with DINOv2 weights; ``registered[mae]`` with the self-supervised stand-in, not DINO-WM."""
        return registered if self.config.encoder_path is not None else f"{registered}[mae]"

    def get_extra_state(self) -> Tensor:
        """Which encoder the saved weights are, so a restored checkpoint reports (and skips pretraining) correctly.

        Stored as the UTF-8 bytes of a JSON object in a uint8 tensor: checkpoints hold tensors only.
        """
        facts = {"encoder_source": self.encoder_source, "selfsup_loss": self.selfsup_loss}
        return torch.tensor(list(json.dumps(facts).encode()), dtype=torch.uint8)

    def set_extra_state(self, state: Tensor) -> None:
        facts: dict[str, Any] = json.loads(bytes(state.tolist()).decode())
        self.encoder_source = facts["encoder_source"]
        self.selfsup_loss = tuple(facts["selfsup_loss"]) if facts["selfsup_loss"] is not None else None


def build(size: str, image_size: int, action_dim: int, *, history: int, **overrides: Any) -> DinoWM:
    """The zoo builder: a preset ("tiny" or "paper") at the task's image size, action width and history."""
    overrides = {"history": history, **overrides}
    config = resolve_config("dino_wm", SIZES, size, image_size=image_size, action_dim=action_dim, **overrides)
    return DinoWM(config)
