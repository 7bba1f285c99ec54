"""The self-supervised fallback for DINO-WM's encoder: masked-autoencoder pretraining (He et al., 2022).

Without local DINOv2 weights, the DINOv2 architecture is pretrained on the task's own frames:
75% of each frame's patches are masked, a small transformer decoder reconstructs their
per-patch-normalised pixels from the visible ones, and the decoder is then dropped. No
augmentation: flips and crops would change what the frames of a navigation task mean.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from models.blocks.vit import Block
from models.dino_wm.dinov2 import DinoV2ViT

log = logging.getLogger(__name__)


class MAEDecoder(nn.Module):
    """MAE's decoder: visible tokens plus mask tokens at every position -> pixels of each patch."""

    def __init__(self, encoder: DinoV2ViT, patch_size: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        num_patches = encoder.grid**2
        self.embed = nn.Linear(encoder.cls_token.shape[-1], dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches, dim) * 0.02)
        self.blocks = nn.ModuleList([Block(dim, heads, 4 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, patch_size * patch_size * 3)

    def forward(self, visible: Tensor, keep: Tensor) -> Tensor:
        """visible tokens (B, P', D_enc) at patch indices keep (B, P') -> patch pixels (B, P, p·p·3)."""
        batch, num_patches = visible.shape[0], self.pos_embed.shape[1]
        tokens = self.mask_token.expand(batch, num_patches, -1).clone()  # (B, P, D)
        tokens.scatter_(1, repeat(keep, "b p -> b p d", d=tokens.shape[-1]), self.embed(visible))
        x = tokens + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def pretrain_mae(
    encoder: DinoV2ViT,
    dataset: torch.utils.data.Dataset,
    normalise: Callable[[Tensor], Tensor],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    mask_ratio: float,
    decoder_dim: int,
    decoder_depth: int,
    decoder_heads: int,
    seed: int,
) -> list[float]:
    """Masked-autoencoder pretraining of ``encoder`` on the dataset's frames; returns the loss per step.

    ``normalise`` maps frames (B, 3, H, W) in [0, 1] to the encoder's input; ``steps`` batches of
    ``batch_size`` windows (every frame of a window used), AdamW at a constant ``lr``; ``seed``
    fixes the batch order and the masks.
    """
    device = encoder.cls_token.device
    patch = encoder.patch_embed.proj.kernel_size[0]
    decoder = MAEDecoder(encoder, patch, decoder_dim, decoder_depth, decoder_heads).to(device)
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))  # MAE's betas
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=False, generator=generator
    )
    encoder.requires_grad_(True).train()
    num_patches = encoder.grid**2
    visible = max(1, round(num_patches * (1 - mask_ratio)))
    losses: list[float] = []
    while len(losses) < steps:
        for batch in loader:
            images = normalise(rearrange(batch["pixels"].to(device), "b t c h w -> (b t) c h w"))  # (B·T, 3, S, S)
            noise = torch.rand(images.shape[0], num_patches, generator=generator).to(device)
            order = noise.argsort(dim=1)
            keep, masked = order[:, :visible], order[:, visible:]  # (B·T, P'), (B·T, P − P')
            reconstructed = decoder(encoder(images, keep), keep)  # (B·T, P, p·p·3)
            target = rearrange(images, "b c (h p) (w q) -> b (h w) (p q c)", p=patch, q=patch)
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
            error = (reconstructed - target).square().mean(-1)  # (B·T, P)
            loss = torch.gather(error, 1, masked).mean()  # on masked patches only (MAE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) >= steps:
                break
    optimizer.zero_grad(set_to_none=True)  # no stale gradient may reach the frozen encoder later
    encoder.requires_grad_(False).eval()
    log.info("MAE pretraining: %d steps, loss %.4f -> %.4f", len(losses), losses[0], losses[-1])
    return losses
