"""Transformer blocks shared by the zoo: patch embedding, pre-norm blocks, a ViT encoder and AdaLN-zero.

LeWM's encoder is a ViT (Dosovitskiy et al., 2021) read out at its CLS token; its
predictor conditions every block on actions by AdaLN-zero (Peebles & Xie, DiT, 2023).
Baselines reuse the same blocks (a DINO-WM-style predictor with frame-causal masks).
Attention runs through ``scaled_dot_product_attention`` on GPU, where its fused kernels apply, and is
written out on a CPU (:func:`attend`).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping patches and embed each linearly."""

    def __init__(self, image_size: int, patch_size: int, dim: int, channels: int = 3) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        self.image_size = image_size
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, P, D) with P = (H / patch)²."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"images of size {tuple(images.shape[-2:])} given to an encoder built for "
                f"{self.image_size}×{self.image_size}; build the model with image_size={images.shape[-1]}"
            )
        return rearrange(self.proj(images), "b d h w -> b (h w) d")


# On a CPU, attention is written out in bf16 and, in fp32, over at most this many keys (measured side by side,
# one thread, forward and backward): PyTorch's CPU kernels in bf16 took 145 ms against 27 written out for a LeWM-tiny
# encoder layer (256 frames × 3 heads × 65 tokens) and 173 against 68 at ViT-Tiny's 197 tokens; in fp32 its fused
# kernel is 7-25% faster from ~65 tokens, and written out is faster over a rollout's few (152 against 88 ms at 5).
CPU_FP32_WRITTEN_OUT_KEYS = 16


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, is_causal: bool = False, dropout: float = 0.0
) -> Tensor:
    """softmax(q kᵀ / √d) v for (B, H, Lq, d) queries over (B, H, Lk, d) keys and values; ``mask`` True where allowed.

    ``scaled_dot_product_attention`` (fused kernels) on a GPU, and on a CPU where it is the faster
    (:data:`CPU_FP32_WRITTEN_OUT_KEYS`); elsewhere the three operations written out. Every mask in the zoo
    lets a query see itself, so no row is fully masked (which only SDPA's math kernel guards against).
    """
    written_out = q.device.type == "cpu" and (q.dtype == torch.bfloat16 or k.shape[-2] <= CPU_FP32_WRITTEN_OUT_KEYS)
    if not written_out:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, Lq, Lk)
    if is_causal:  # query i sees keys 0..i (top-left aligned, as scaled_dot_product_attention's)
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.dropout(scores.softmax(dim=-1), dropout) if dropout else scores.softmax(dim=-1)
    return weights.to(v.dtype) @ v  # (B, H, Lq, d)


class Attention(nn.Module):
    """Multi-head self-attention; ``dim_head`` may differ from dim / heads (LeWM's predictor: 16 × 64 at width 192).

    ``qkv_bias`` gives the query, key and value projections a bias (Hugging Face's ViT has one).
    """

    def __init__(
        self, dim: int, heads: int, dim_head: int | None = None, dropout: float = 0.0, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        self.heads = heads
        dim_head = dim_head or dim // heads
        inner = heads * dim_head
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.dropout = dropout

    def forward(
        self, x: Tensor, mask: Tensor | None = None, is_causal: bool = False, queries: int | None = None
    ) -> Tensor:
        """(B, L, D) -> (B, L, D). ``mask`` (L, L) or (B, 1, L, L): True where attention is allowed.

        With ``queries``, only the last ``queries`` positions attend (to all L, as the mask's last
        rows allow): (B, L, D) -> (B, queries, D), for a caller that keeps only those outputs.
        """
        if x.shape[1] == 1 and mask is None and not (self.training and self.dropout):
            # One token attends to itself alone: the softmax over one key is 1, so the output is its value and the
            # query and key projections are not needed (a history-1 rollout step; SDPA took 14% of its plan).
            inner = self.qkv.out_features // 3
            bias = None if self.qkv.bias is None else self.qkv.bias[2 * inner :]
            return self.out(F.linear(x, self.qkv.weight[2 * inner :], bias))  # (B, 1, D)
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        if queries is not None:
            if is_causal:
                raise ValueError("queries with is_causal: give the causal mask's last rows instead")
            q = q[:, :, -queries:]  # (B, heads, queries, d)
            mask = None if mask is None else mask[..., -queries:, :]
        attended = attend(q, k, v, mask, is_causal, self.dropout if self.training else 0.0)
        return self.out(rearrange(attended, "b h l d -> b l (h d)"))


class FeedForward(nn.Sequential):
    """The transformer MLP: Linear, GELU, Linear, with dropout."""

    def __init__(self, dim: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        dim_head: int | None = None,
        qkv_bias: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, dim_head, dropout, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = FeedForward(dim, mlp_dim, dropout)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, is_causal: bool = False, queries: int | None = None
    ) -> Tensor:
        """(B, L, D) -> (B, L, D); with ``queries``, the last ``queries`` positions only: (B, queries, D)."""
        kept = x if queries is None else x[:, -queries:]
        x = kept + self.attn(self.norm1(x), mask, is_causal, queries)
        return x + self.mlp(self.norm2(x))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """AdaLN's affine map of a normalised input."""
    return x * (1 + scale) + shift


class ConditionedBlock(nn.Module):
    """Pre-norm block conditioned by AdaLN-zero.

    A zero-initialised Linear(cond_dim, 6·dim) turns the condition into shift, scale and
    gate for the attention and the MLP branch; at initialisation every gate is 0, so the
    block is the identity and the condition's influence is learned from there.

    ``branch_norm`` is the authors' library's layout (stable-worldmodel's LeWM): each branch
    normalises its modulated input once more, with an affine LayerNorm, before attention and
    before the MLP. ``norm_eps`` is the AdaLN norms' epsilon (theirs: 1e-6).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        dim_head: int | None = None,
        cond_dim: int | None = None,
        norm_eps: float = 1e-5,
        branch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.attn = Attention(dim, heads, dim_head, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=norm_eps)
        self.mlp = FeedForward(dim, mlp_dim, dropout)
        self.attn_norm = nn.LayerNorm(dim) if branch_norm else nn.Identity()
        self.mlp_norm = nn.LayerNorm(dim) if branch_norm else nn.Identity()
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim or dim, 6 * dim))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, x: Tensor, cond: Tensor, mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """x (B, L, D) and cond (B, L, C) per token or (B, C) per sequence -> (B, L, D)."""
        if cond.ndim == 2:
            cond = rearrange(cond, "b c -> b 1 c")
        return self.modulated(x, self.modulation(cond), mask, is_causal)

    def modulated(self, x: Tensor, modulation: Tensor, mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """The block given its condition's modulation (B, L or 1, 6·D), which a rollout makes once for all its steps."""
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = modulation.chunk(6, dim=-1)
        x = x + gate_attn * self.attn(self.attn_norm(modulate(self.norm1(x), shift_attn, scale_attn)), mask, is_causal)
        return x + gate_mlp * self.mlp(self.mlp_norm(modulate(self.norm2(x), shift_mlp, scale_mlp)))


def sincos_2d(grid: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine positional embeddings (MAE, He et al., 2022): (grid², dim), half rows, half columns."""
    if dim % 4:
        raise ValueError(f"2-D sincos embeddings need a width divisible by 4, got {dim}")
    freqs = 1.0 / 10_000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))  # (dim / 4,)
    rows, cols = torch.meshgrid(
        torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij"
    )
    angles = [torch.outer(axis.flatten(), freqs) for axis in (rows, cols)]  # 2 × (grid², dim / 4)
    return torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=1)  # (grid², dim)


class ViTConfig(Protocol):
    """The fields a model config carries to describe its ViT encoder."""

    image_size: int
    patch_size: int
    encoder_width: int
    encoder_depth: int
    encoder_heads: int
    encoder_mlp_dim: int
    encoder_pos_init: str


class ViTEncoder(nn.Module):
    """Vision transformer: patches + a CLS token + learned positional embeddings -> pre-norm blocks -> LayerNorm.

    ``pos_init="sincos"`` starts the positional embeddings from a 2-D sine-cosine grid
    instead of noise, so where a patch sits is readable from the first step. ``qkv_bias`` and
    ``norm_eps`` (1e-12 there) give Hugging Face's ``ViTModel`` layout, which the authors' LeWM uses.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        channels: int = 3,
        pos_init: str = "random",
        qkv_bias: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(image_size, patch_size, dim, channels)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.patch_embed.num_patches + 1, dim) * 0.02)
        if pos_init == "sincos":
            with torch.no_grad():
                self.pos_embed[0, 1:] = sincos_2d(image_size // patch_size, dim)
        elif pos_init != "random":
            raise ValueError(f"pos_init must be 'random' or 'sincos', got {pos_init!r}")
        self.blocks = nn.ModuleList(
            [Block(dim, heads, mlp_dim, dropout, qkv_bias=qkv_bias, norm_eps=norm_eps) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        nn.init.normal_(self.cls_token, std=0.02)

    @classmethod
    def from_config(cls, config: ViTConfig, **layout: Any) -> ViTEncoder:
        """The encoder a model config names by its ``encoder_*`` fields (LeWM's, PLDM's ViT variant);
        ``layout`` passes options the config does not name (``qkv_bias``, ``norm_eps``)."""
        return cls(
            config.image_size,
            config.patch_size,
            config.encoder_width,
            config.encoder_depth,
            config.encoder_heads,
            config.encoder_mlp_dim,
            pos_init=config.encoder_pos_init,
            **layout,
        )

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> tokens (B, 1 + P, D); token 0 is the CLS token."""
        patches = self.patch_embed(images)  # (B, P, D)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, patches], dim=1) + self.pos_embed  # (B, 1 + P, D)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def frame_causal_mask(frames: int, tokens_per_frame: int, device: torch.device | None = None) -> Tensor:
    """Boolean (L, L) mask, L = frames × tokens: a token sees every token of its own and earlier frames."""
    frame_of_token = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame)  # (L,)
    return frame_of_token[None, :] <= frame_of_token[:, None]
